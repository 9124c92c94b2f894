"""The CLI's imports are frozen out of the garbage collector's sight; what is made later is collected as usual."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import gc, weakref
from tlearn.cli.heap import long_lived

before = gc.get_freeze_count()
with long_lived():
    assert not gc.isenabled()  # no collection while the imports run
    import json.decoder, email.parser  # modules, functions, classes: objects that live as long as the process
assert gc.isenabled() and gc.get_freeze_count() > before + 100

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a  # a cycle made after the imports: garbage once dropped
gone = weakref.ref(a)
del a, b
gc.collect()
assert gone() is None
try:
    with long_lived():
        raise KeyError("a failed import")
except KeyError:
    pass
assert gc.isenabled()
print("ok")
"""


def test_imports_are_frozen_and_later_garbage_is_still_collected() -> None:
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
