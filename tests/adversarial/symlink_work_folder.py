# expect: passed. Right add; plants symlinks in its work folder to a folder outside (from the
# harness), and a read-only folder, for a clean-up that follows links or chmods as root.
import os

for i, target in enumerate(__FOLDERS__):
    try:
        os.symlink(target, f"link{i}")
        os.makedirs(f"ro{i}/inner")
        os.symlink(target, f"ro{i}/inner/link")
        os.chmod(f"ro{i}/inner", 0o500)
        os.chmod(f"ro{i}", 0o500)
    except OSError:
        pass


def add(a, b):
    return a + b
# ruff: noqa: F821  (the harness fills in the __NAME__ placeholders)
