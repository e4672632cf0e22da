"""The `attngan` command as the integration tests call it (one definition for every test file)."""
import os, subprocess, sys
from pathlib import Path

_script = Path(sys.executable).parent/'attngan'              # the console script of the environment
PY_ATTNGAN = [sys.executable, '-c', 'import sys; from attngan.cli import main; sys.exit(main(sys.argv[1:]))']
ATTNGAN = [str(_script)] if _script.exists() else PY_ATTNGAN  # the script when installed: a signal reaches the trainer itself
ENV = dict(os.environ, OMP_NUM_THREADS='1', MPLBACKEND='Agg')  # one thread each: the suite shares 2 cores


def run(*args, timeout=600, env=ENV) -> subprocess.CompletedProcess:
    "Run `attngan ARGS...` to the end; its exit code, stdout and stderr."
    return subprocess.run([*PY_ATTNGAN, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)
