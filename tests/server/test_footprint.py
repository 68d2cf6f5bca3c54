"""The server loads no numba: its ring kernels are C, and what needs numba loads in the workers."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import psutil
import pytest
from websockets.asyncio.client import connect

from ringaudio.kernels import backend

from .conftest import ServerProcess, speak

pytestmark = pytest.mark.skipif(backend.NAME != "c", reason="the C ring kernels were not built")


def test_importing_the_server_loads_no_numba() -> None:
    code = (
        "import sys, ringaudio.server.__main__, ringaudio.server.app\n"
        "print(sorted(m for m in sys.modules if m.startswith(('numba', 'llvmlite'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_serving_server_maps_no_llvm_and_nor_does_its_worker() -> None:
    """On the C kernels the server never loads numba and LLVM, and nor does a worker whose voice is
    resampled in two stages (22 050 -> 48 000 at hq: the C kernel) and converted to int16 in C."""
    srv = ServerProcess()
    try:

        async def go() -> int:
            async with connect(srv.url) as ws:
                await ws.recv()  # the session event
                return len(await speak(ws, "Nothing but C between the ring and the socket."))

        assert asyncio.run(go()) > 10
        server = psutil.Process(srv.proc.pid)
        workers = server.children()

        def llvm(proc: psutil.Process) -> bool:
            return any("llvmlite" in m.path for m in proc.memory_maps(grouped=True))

        assert not llvm(server)
        assert workers and not any(llvm(w) for w in workers)
        assert all("numba" not in m.path for w in workers for m in w.memory_maps(grouped=True))
    finally:
        assert srv.stop() == 0
