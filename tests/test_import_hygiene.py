import subprocess
import sys


def test_import_medvit_is_light():
    code = (
        "import sys, medvit; m = medvit.create_model('vit_tiny_patch16_224', embed_dim=48, depth=1, num_heads=4);"
        "bad = [x for x in ('streamlit', 'pydicom', 'nibabel', 'transformers', 'peft', 'highdicom', 'monai')"
        " if x in sys.modules]; print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import medvit pulled in: {out.stdout}"
