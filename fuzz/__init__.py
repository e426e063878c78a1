"""Coverage-guided fuzz targets: one per decoder of outside bytes.

Each ``fuzz_<name>.py`` defines ``test_one_input(data: bytes) -> None`` that
feeds ``data`` to one decoder and checks the contract every decoder of outside
bytes keeps (see :mod:`fuzz.harness`). ``python -m fuzz.run NAME`` runs one
target, under atheris when it is installed and under a seeded mutation loop
otherwise; seed corpora live in ``tests/fuzz/corpus/<name>/``.
"""
