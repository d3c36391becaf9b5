"""Test-suite wiring: the local control plane plugin (fixtures, markers, xdist sharing).

Installing konductor registers the plugin (a ``pytest11`` entry point); it is listed here too
so the suite also runs with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1``. The entry point is named
after the module, so pytest does not register it twice.

The plugin starts one kube-apiserver + etcd per session only when a selected test uses its
fixtures, so ``pytest tests/unit`` stays fast. Fixtures it provides: ``control_plane``,
``kubeconfig``, ``api_client``, ``namespace`` and ``anyio_backend`` (see docs/testing.md).
Defined here: ``interrupt_main_thread``, a Ctrl-C for the tests of blocking calls.
"""

import signal
import threading
from collections.abc import Callable, Iterator

import pytest

pytest_plugins = ["konductor_sdk.testing.pytest_plugin"]


@pytest.fixture
def interrupt_main_thread() -> Iterator[Callable[[threading.Event], None]]:
    """``arm(started)``: a SIGINT (Ctrl-C) to this thread once ``started`` is set.

    Sent again while the handler has not run: CPython can miss a signal that arrives
    between a lock's non-blocking try and its blocking wait (the C handler has run, the
    wait then sleeps), and runs the Python handler only at the next wake-up. A second
    signal ends that wait; pending SIGINTs are handled once, so the caller sees one
    ``KeyboardInterrupt`` either way.
    """
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals go to the main thread")
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is handled by someone else here")
    timers: list[threading.Thread] = []
    main = threading.main_thread().ident
    assert main is not None
    handled = threading.Event()

    def handler(signum: int, frame: object) -> None:
        handled.set()
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt

    def arm(started: threading.Event) -> None:
        def fire() -> None:
            if not started.wait(60):
                return
            for _ in range(30):
                signal.pthread_kill(main, signal.SIGINT)
                if handled.wait(1):
                    return

        timers.append(threading.Thread(target=fire, daemon=True))
        timers[-1].start()

    signal.signal(signal.SIGINT, handler)
    try:
        yield arm
        for t in timers:
            t.join(35)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
