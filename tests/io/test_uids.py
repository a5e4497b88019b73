from pydicom.uid import UID

from medvit.io.safe_write import is_valid_uid
from medvit.io.uids import make_uid


def test_make_uid_is_deterministic_valid_and_separates_parts():
    a = make_uid("study", "PID1", "ACC1")
    assert a == make_uid("study", "PID1", "ACC1")  # a re-run writes the same UID
    assert a != make_uid("study", "PID1", "ACC2")
    assert make_uid("ab", "c") != make_uid("a", "bc")  # parts are not simply concatenated
    assert len(a) <= 64 and is_valid_uid(a) and UID(a).is_valid
    assert a.startswith("1.2.826.0.1.3680043.8.498.")
