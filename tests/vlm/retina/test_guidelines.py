"""Guideline rules as data: every staging and referral path, precedence, validation errors, report reading."""

import shutil

import pytest
import yaml

from medvit.data.phantom_retina import RetinaPhantomGenerator
from medvit.vlm.retina.guidelines import (
    GuidelineError,
    default_guidelines_dir,
    load_guidelines,
    referral_from_stage,
    stage_evidence,
    stage_from_biomarkers,
)
from medvit.vlm.retina.reports import (
    PHANTOM_REFERRAL,
    PHANTOM_STAGE,
    observations_from_phantom,
    observations_from_report,
)


@pytest.fixture(scope="module")
def g():
    return load_guidelines(default_guidelines_dir())


STAGE_TABLE = [
    ({}, "healthy"),
    ({"drusen": True, "drusen_size": "small", "drusen_count": 3}, "healthy"),
    ({"non_amd_pathology": True}, "non-AMD pathology"),
    ({"drusen": True, "drusen_size": "medium"}, "early"),
    ({"drusen_size": "medium", "non_amd_pathology": True}, "early"),  # an AMD stage wins over non-AMD pathology
    ({"drusen_size": "large"}, "intermediate"),
    ({"hyperreflective_foci": True}, "intermediate"),
    ({"drusen_size": "medium", "hyperreflective_foci": True}, "intermediate"),
    ({"ped": True, "ped_type": "drusenoid"}, "intermediate"),
    ({"rpe_atrophy": True}, "late dry"),
    ({"hypertransmission": True}, "late dry"),
    ({"rpe_atrophy": True, "drusen_size": "large", "hyperreflective_foci": True}, "late dry"),
    ({"fibrosis": True}, "late wet (inactive)"),
    ({"shrm": True}, "late wet (inactive)"),
    ({"double_layer_sign": True}, "late wet (inactive)"),
    ({"ped": True, "ped_type": "fibrovascular"}, "late wet (inactive)"),
    ({"fibrosis": True, "rpe_atrophy": True}, "late wet (inactive)"),
    ({"srf": True}, "late wet (active)"),
    ({"irf": True}, "late wet (active)"),
    ({"fibrosis": True, "srf": True}, "late wet (active)"),  # fluid separates active from inactive
    ({"ped": True, "ped_type": "serous", "irf": True, "rpe_atrophy": True}, "late wet (active)"),
    ({"ped": True, "ped_type": "serous"}, "healthy"),  # a serous PED alone defines no stage
    ({"drusen": "1", "drusen_size": "large", "drusen_count": "4"}, "intermediate"),  # CSV strings coerced
]


@pytest.mark.parametrize("obs,stage", STAGE_TABLE)
def test_stage_table(g, obs, stage):
    assert stage_from_biomarkers(obs, g) == stage


def test_every_stage_reached_by_the_table(g):
    assert {s for _, s in STAGE_TABLE} == set(g.stage_names)


REFERRAL_TABLE = [
    ("healthy", {}, "none"), ("early", {}, "none"), ("intermediate", {}, "none"),
    ("intermediate", {"progressing": True}, "general attention"), ("early", {"progressing": True}, "none"),
    ("non-AMD pathology", {}, "general attention"), ("late dry", {}, "general attention"),
    ("late wet (inactive)", {}, "general attention"), ("late wet (active)", {}, "urgent"),
    ("late wet (active)", {"progressing": True}, "urgent"),
]


@pytest.mark.parametrize("stage,flags,level", REFERRAL_TABLE)
def test_referral_table(g, stage, flags, level):
    assert referral_from_stage(stage, g, flags) == level


def test_chain_of_thought_evidence_lists_every_holding_stage(g):
    ev = stage_evidence({"drusen_size": "large", "rpe_atrophy": True, "srf": True}, g)
    assert [s.name for s, _ in ev] == ["healthy", "intermediate", "late dry", "late wet (active)"]
    assert [c.biomarker for c in ev[-1][1]] == ["srf"]


@pytest.mark.parametrize("obs,msg", [({"drusn": True}, "unknown biomarker"), ({"srf": "maybe"}, "srf: expected a bool"),
                                     ({"drusen_size": "huge"}, "drusen_size: expected one of"),
                                     ({"drusen_count": -1}, "non-negative"), ({"drusen_count": 2.5}, "integer")])
def test_bad_observations(g, obs, msg):
    with pytest.raises(GuidelineError, match=msg):
        stage_from_biomarkers(obs, g)


def test_unknown_stage_for_referral(g):
    with pytest.raises(GuidelineError, match="unknown stage 'late'"):
        referral_from_stage("late", g)


def _broken(tmp_path, file, edit):
    d = tmp_path / "gl"
    shutil.copytree(default_guidelines_dir(), d)
    data = yaml.safe_load((d / file).read_text())
    edit(data)
    (d / file).write_text(yaml.safe_dump(data))
    return d


@pytest.mark.parametrize("file,edit,msg", [
    ("biomarkers.yaml", lambda d: d.pop("version"), "biomarkers.yaml: version: missing"),
    ("biomarkers.yaml", lambda d: d.update(version="1"), "version: must be semantic"),
    ("biomarkers.yaml", lambda d: d.update(kind="staging"), "kind: must be 'biomarkers'"),
    ("biomarkers.yaml", lambda d: d["biomarkers"]["srf"].update(type="float"), r"biomarkers.srf.type: must be one"),
    ("biomarkers.yaml", lambda d: d["biomarkers"]["srf"].update(colour="red"), "biomarkers.srf.colour: unknown key"),
    ("biomarkers.yaml", lambda d: d["biomarkers"]["srf"].update(default="wet"), "biomarkers.srf.default"),
    ("biomarkers.yaml", lambda d: d["biomarkers"]["drusen_size"].update(values=[]), "drusen_size.values"),
    ("biomarkers.yaml", lambda d: d["biomarkers"]["srf"].update(synonyms=["SRF"]), "srf.synonyms: must be a list of l"),
    ("biomarkers.yaml", lambda d: d["biomarkers"].pop("fibrosis"), r"stages\[5\].any_of\[0\].biomarker: unknown biom"),
    ("staging.yaml", lambda d: d.update(precedence="first"), "staging.yaml: precedence"),
    ("staging.yaml", lambda d: d["stages"][2]["any_of"][0].update(**{"in": ["giant"]}), r"stages\[2\].any_of\[0\].in"),
    ("staging.yaml", lambda d: d["stages"][3]["any_of"][1].update(**{"is": "yes"}), r"any_of\[1\].is: needs a bool"),
    ("staging.yaml", lambda d: d["stages"][3]["any_of"][1].update(at_least=2), "exactly one of is / in / at_least"),
    ("staging.yaml", lambda d: d["stages"][1].update(name="healthy"), "duplicate stage 'healthy'"),
    ("staging.yaml", lambda d: d["stages"][0].pop("default"), r"stages\[0\]: exactly the first"),
    ("staging.yaml", lambda d: d.update(evaluation_options=["healthy", "late"]), "evaluation_options"),
    ("referral.yaml", lambda d: d["by_stage"].pop("late dry"), r"by_stage: no referral level for stage\(s\)"),
    ("referral.yaml", lambda d: d["by_stage"].update(early="soon"), "by_stage.early: unknown level 'soon'"),
    ("referral.yaml", lambda d: d["by_stage"].update(late="none"), "by_stage.late: unknown stage"),
    ("referral.yaml", lambda d: d["escalate"][0].update(to="later"), r"escalate\[0\]"),
])
def test_validation_errors_name_file_and_key(tmp_path, file, edit, msg):
    with pytest.raises(GuidelineError, match=msg):
        load_guidelines(_broken(tmp_path, file, edit))


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(GuidelineError, match="biomarkers.yaml: guideline file not found"):
        load_guidelines(tmp_path)
    d = tmp_path / "gl"
    shutil.copytree(default_guidelines_dir(), d)
    (d / "staging.yaml").write_text("stages: [unclosed")
    with pytest.raises(GuidelineError, match="staging.yaml: not valid YAML"):
        load_guidelines(d)


def test_version_recorded(g):
    assert g.version == "b1.0.0+r1.0.0+s1.0.0"


REPORT_TABLE = [
    ("FINDINGS: No drusen. No intraretinal or subretinal fluid.", {}),
    ("FINDINGS: 3 drusen, the largest medium (63-125 µm). Dry macula.",
     {"drusen": True, "drusen_size": "medium", "drusen_count": 3, "rpe_elevation": True}),
    ("FINDINGS: Several drusen up to 180 µm. Hyperreflective foci are absent.",
     {"drusen": True, "drusen_size": "large", "drusen_count": 3, "rpe_elevation": True, "hyperreflective_foci": False}),
    ("FINDINGS: Subretinal and intraretinal fluid is present. There is a fibrovascular pigment epithelial detachment.\n"
     "IMPRESSION: no geographic atrophy, intermediate would need large drusen.",
     {"srf": True, "irf": True, "ped": True, "ped_type": "fibrovascular", "rpe_elevation": True}),
    ("Subretinal hyperreflective material without subretinal fluid.", {"shrm": True, "srf": False}),
]


@pytest.mark.parametrize("report,expected", REPORT_TABLE)
def test_report_reading_table(g, report, expected):
    obs = observations_from_report(report, g)
    want = {n: b.default for n, b in g.biomarkers.items()} | expected
    assert obs == want


def test_phantom_reports_read_back_to_truth_and_stage(g):
    gen = RetinaPhantomGenerator(image_size=40, seed=5)
    for i in range(150):
        p = gen.sample(i)
        truth = observations_from_phantom(p.findings[0], None, g)
        assert observations_from_report(p.report, g) == truth, p.report
        stage = stage_from_biomarkers(truth, g)
        assert stage == PHANTOM_STAGE[p.meta["stage_name"]]
        assert referral_from_stage(stage, g) == PHANTOM_REFERRAL[p.meta["referral_name"]]
