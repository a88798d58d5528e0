"""Regression tests for the default call path (background compile on, disk cache on) under races,
interrupts and fork.

Each test runs a script in a fresh process on a fresh private cache, with a timeout, and
checks that the process exits cleanly and that every call gives the right value. The races
are repeated inside each script (several bodies, staggered first calls) so that the buggy
code fails every run, not now and then.
"""
from __future__ import annotations

from reliability_support import environment, run_script

TIMEOUT = 120  # seconds per script: far above a normal run, so only a hang reaches it


def run(script, tmp_path, name, timeout=TIMEOUT, args=(), **env):
    return run_script(script, tmp_path, name, environment(tmp_path / "cache", **env), timeout, args)


# -- 1. functions that generate the same code, on a cold cache -----------------------------

RACE_PRELUDE = """
    import threading
    import time

    import tracegrad as tg
    import tracegrad.numpy as tnp

    x = np.linspace(-1.0, 1.0, 5)


    def settle(label, functions, args, wants):
        # after every background compile: each function gives the right value (compiled code now)
        tg.wait_for_compiles()
        for index, (function, want) in enumerate(zip(functions, wants)):
            for call in range(2):
                attempt(f"{label} #{index} call {call} after wait_for_compiles", lambda: function(*args), want)
"""


def test_functions_from_a_factory_with_one_body(tmp_path):
    script = RACE_PRELUDE + """
    def make(c):
        return lambda x: tnp.sum(tnp.tanh(x) * x) * c

    functions, wants = [], []
    for body in range(3):  # three sources, eight functions each
        c = float(body + 1)
        for instance in range(8):
            function = tg.grad(make(c))
            functions.append(function)
            wants.append(c * (np.tanh(x) + x * (1 - np.tanh(x) ** 2)))
            # first calls staggered over the time numba takes, so some land while another copy loads
            attempt(f"body {body} instance {instance} first call", lambda: function(x), wants[-1])
            time.sleep(0.004)
    for round in range(3):
        for index, function in enumerate(functions):
            attempt(f"#{index} round {round}", lambda: function(x), wants[index])
    settle("factory", functions, (x,), wants)
    finish()
    """
    run(script, tmp_path, "factory").check()


def test_a_list_of_lambdas_with_identical_bodies(tmp_path):
    script = RACE_PRELUDE + """
    bodies = [lambda x: tnp.sum(tnp.sin(x) * x), lambda x: tnp.sum(tnp.sin(x) * x),
              lambda x: tnp.sum(tnp.sin(x) * x), lambda x: tnp.sum(tnp.sin(x) * x),
              lambda x: tnp.sum(tnp.sin(x) * x), lambda x: tnp.sum(tnp.sin(x) * x),
              lambda x: tnp.sum(tnp.sin(x) * x), lambda x: tnp.sum(tnp.sin(x) * x)]
    value, gradient = np.sum(np.sin(x) * x), np.cos(x) * x + np.sin(x)
    cases = []
    for kind, transform, want in (("grad", tg.grad, gradient), ("jit", tg.jit, value),
                                  ("value_and_grad", tg.value_and_grad, None)):
        for index, body in enumerate(bodies):
            function = transform(body)
            cases.append((f"{kind} #{index}", function, want))
            if want is None:
                got = attempt(f"{kind} #{index} first call", lambda: function(x))
                if got is not None:
                    check(f"{kind} #{index} value", got[0], value)
                    check(f"{kind} #{index} gradient", got[1], gradient)
            else:
                attempt(f"{kind} #{index} first call", lambda: function(x), want)
            time.sleep(0.01)
    tg.wait_for_compiles()
    for label, function, want in cases:
        got = attempt(f"{label} after wait_for_compiles", lambda: function(x))
        if got is not None:
            if want is None:
                check(f"{label} value after wait", got[0], value)
                check(f"{label} gradient after wait", got[1], gradient)
            else:
                check(f"{label} after wait", got, want)
    finish()
    """
    run(script, tmp_path, "identical_lambdas").check()


def test_vjp_in_a_loop(tmp_path):
    script = RACE_PRELUDE + """
    x = np.linspace(-1.0, 1.0, 4)
    for scale in (2.0, 3.0, 5.0):  # three sources, each made again at every iteration
        for i in range(6):
            got = attempt(f"scale {scale} vjp {i}", lambda: tg.vjp(lambda x: tnp.tanh(x) * scale, x))
            if got is not None:
                out, pullback = got
                check(f"scale {scale} vjp {i} output", out, np.tanh(x) * scale)
                attempt(f"scale {scale} pullback {i}", lambda: pullback(np.ones(4)),
                        ((1 - np.tanh(x) ** 2) * scale,))
            time.sleep(0.01)
    tg.wait_for_compiles()
    for i in range(3):
        got = attempt(f"vjp {i} after wait_for_compiles", lambda: tg.vjp(lambda x: tnp.tanh(x) * 2.0, x))
        if got is not None:
            check(f"vjp {i} output after wait", got[0], np.tanh(x) * 2.0)
            attempt(f"pullback {i} after wait", lambda: got[1](np.ones(4)), ((1 - np.tanh(x) ** 2) * 2.0,))
    finish()
    """
    run(script, tmp_path, "vjp_loop").check()


def test_grad_next_to_grad_with_a_tuple_of_argnums(tmp_path):
    script = RACE_PRELUDE + """
    pairs = []
    for c in (1.0, 2.0, 3.0, 4.0):
        f = lambda x, c=c: tnp.sum(tnp.exp(x) * x) * c
        want = c * np.exp(x) * (1 + x)
        # one source (named "grad") for both: the plain gradient, and a one-element tuple of it
        by_int, by_tuple = tg.grad(f), tg.grad(f, argnums=(0,))
        attempt(f"c={c} argnums=0", lambda: by_int(x), want)
        attempt(f"c={c} argnums=(0,)", lambda: by_tuple(x), (want,))
        for call in range(20):  # while the background compile of this source runs
            attempt(f"c={c} argnums=0 call {call}", lambda: by_int(x), want)
            attempt(f"c={c} argnums=(0,) call {call}", lambda: by_tuple(x), (want,))
            time.sleep(0.002)
        pairs.append((by_int, by_tuple, want))
    tg.wait_for_compiles()
    for index, (by_int, by_tuple, want) in enumerate(pairs):
        attempt(f"#{index} argnums=0 after wait", lambda: by_int(x), want)
        attempt(f"#{index} argnums=(0,) after wait", lambda: by_tuple(x), (want,))
    finish()
    """
    run(script, tmp_path, "argnums").check()


THREADS_SCRIPT = RACE_PRELUDE + """
    N = 8
    mode = sys.argv[1]  # "values": five bodies, and more functions made while numba works; "threads": one
    functions, wants = [], []
    lock = threading.Lock()


    def work(body, index, barrier):
        # each thread makes its own function: the same body as the other threads'
        c = float(body + 1)
        function = tg.grad(lambda x: tnp.sum(tnp.cos(x) * x) * c)
        with lock:
            functions.append((f"body {body} thread {index}", function, wants[body]))
        barrier.wait()
        attempt(f"body {body} thread {index} first call", lambda: function(x), wants[body])
        attempt(f"body {body} thread {index} second call", lambda: function(x), wants[body])
        started = time.monotonic()
        while mode == "values" and time.monotonic() - started < 0.25:  # fresh copies while numba works
            another = tg.grad(lambda x: tnp.sum(tnp.cos(x) * x) * c)
            with lock:
                functions.append((f"body {body} thread {index} copy", another, wants[body]))
            attempt(f"body {body} thread {index} copy's first call", lambda: another(x), wants[body])


    bodies = 5 if mode == "values" else 1
    wants = [float(b + 1) * (np.cos(x) - x * np.sin(x)) for b in range(bodies)]
    compile_threads = []
    for body in range(bodies):
        barrier = threading.Barrier(N)
        threads = [threading.Thread(target=work, args=(body, i, barrier)) for i in range(N)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        compile_threads.append(sum(t.name.startswith("tracegrad-compile") for t in threading.enumerate()))
    if max(compile_threads) > 1:
        failures.append(f"{max(compile_threads)} threads named tracegrad-compile after {N} concurrent first calls "
                        "(at most one expected)")
    tg.wait_for_compiles()
    raising = 0
    for label, function, want in functions:
        before = len(failures)
        attempt(f"{label} after wait_for_compiles", lambda: function(x), want)
        raising += len(failures) > before
    finish(compile_threads=compile_threads, functions=len(functions), raising_after_wait=raising)
"""


def test_eight_threads_each_making_a_function_with_the_same_body(tmp_path):
    run(THREADS_SCRIPT, tmp_path, "threads_values", args=["values"]).check()


def test_eight_concurrent_first_calls_start_at_most_one_compile_thread(tmp_path):
    # the compile thread is made once per process: three processes, so today's race shows every run
    for attempt in range(3):
        directory = tmp_path / f"process{attempt}"
        directory.mkdir()
        result = run(THREADS_SCRIPT, directory, "threads_count", args=["threads"])
        assert result.result is not None, result.describe()
        assert max(result.result["compile_threads"]) <= 1, result.describe()
        result.check()


# -- 2. Ctrl-C while a generated module is first loaded --------------------------------------

# SIGALRM raises KeyboardInterrupt, as Ctrl-C's SIGINT does, at swept delays after a first call
# starts. An interrupt that would land inside numba's or llvmlite's own code (numba's import,
# its compiler, its cache loader, which no caller can protect) is put off by 0.2 ms until the
# main thread is back in tracegrad's code, the generated module, the import system or the script.
INTERRUPT_SCRIPT = """
    import os
    import signal
    import time

    import numba  # an interrupt inside `import numba` itself is numba's business, not tracegrad's

    import tracegrad as tg
    import tracegrad.numpy as tnp

    mode, count, earliest, latest = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    FOREIGN = tuple(os.sep + name + os.sep for name in ("numba", "llvmlite"))
    state = {"armed": False, "delivered": 0, "put_off": 0}


    def foreign(frame):
        while frame is not None:
            code = frame.f_code
            if code.co_name == "__del__" or code.co_filename.endswith("weakref.py") or any(
                    part in code.co_filename for part in FOREIGN):
                return True
            frame = frame.f_back
        return False


    def on_alarm(signum, frame):
        if not state["armed"]:
            return
        if foreign(frame):
            state["put_off"] += 1
            signal.setitimer(signal.ITIMER_REAL, 0.0002)
            return
        state["armed"] = False
        state["delivered"] += 1
        raise KeyboardInterrupt


    signal.signal(signal.SIGALRM, on_alarm)


    def make(c):
        return lambda x: tnp.sin(x) * x + c * x


    def want(c):
        return np.cos(0.5) * 0.5 + np.sin(0.5) + c


    if mode == "fill":  # an earlier process: every body compiled, in the disk cache
        for k in range(count):
            attempt(f"fill {k}", lambda: tg.grad(make(float(k + 1)))(0.5), want(float(k + 1)))
        finish()

    interrupted, functions = 0, []
    for k in range(count):
        c = float(k + 1)
        delay = earliest + (latest - earliest) * k / count
        function = tg.grad(make(c))
        try:
            state["armed"] = True
            signal.setitimer(signal.ITIMER_REAL, delay)
            function(0.5)
            state["armed"] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        except KeyboardInterrupt:
            state["armed"] = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            interrupted += 1
        # the interrupted function, called again; and a fresh function with the same body
        attempt(f"body {k} (interrupted at {delay * 1000:.2f} ms) called again", lambda: function(0.5), want(c))
        fresh = tg.grad(make(c))
        attempt(f"body {k} fresh function", lambda: fresh(0.5), want(c))
        functions.append((k, function, fresh))
    tg.wait_for_compiles()
    for k, function, fresh in functions:
        attempt(f"body {k} after wait_for_compiles", lambda: function(0.5), want(float(k + 1)))
        attempt(f"body {k} fresh after wait_for_compiles", lambda: fresh(0.5), want(float(k + 1)))
    if interrupted < 5:
        failures.append(f"the sweep interrupted only {interrupted} of {count} first calls: it tests nothing")
    finish(interrupted=interrupted, **state)
"""


def test_ctrl_c_during_first_loads_with_background_compile_off(tmp_path):
    # cold cache: the generated module is written, imported and compiled in the calling thread
    result = run(INTERRUPT_SCRIPT, tmp_path, "interrupt_cold", args=["sweep", 60, 0.0001, 0.002],
                 TRACEGRAD_BACKGROUND_COMPILE="0")
    result.check()


def test_ctrl_c_during_first_loads_from_a_warm_disk_cache(tmp_path):
    # an earlier process filled the disk cache: this one imports the module in the calling thread
    # (one script file for both: generated code names the file and line each statement comes from)
    run(INTERRUPT_SCRIPT, tmp_path, "interrupt_warm", args=["fill", 60, 0, 0], TRACEGRAD_BACKGROUND_COMPILE="0").check()
    result = run(INTERRUPT_SCRIPT, tmp_path, "interrupt_warm", args=["sweep", 60, 0.0003, 0.0015])
    result.check()


# -- 3. fork while the compile thread works --------------------------------------------------

FORK_SCRIPT = """
    import os
    import signal
    import time

    import tracegrad as tg
    import tracegrad.numpy as tnp

    mode, child_timeout = sys.argv[1], float(sys.argv[2])
    x = np.linspace(-1.0, 1.0, 7)


    def make(c):
        return lambda x: tnp.sum(tnp.tanh(x * c) * tnp.exp(-x * x) + tnp.sin(x) * c)


    def want(c):
        t = np.tanh(x * c)
        return (1 - t * t) * c * np.exp(-x * x) - 2 * x * t * np.exp(-x * x) + np.cos(x) * c


    def child():
        # in a forked child: (a) compile something new in the calling thread; (b) wait for compiles
        if mode == "foreground":
            tg.config.compile_in_background = False
            fresh = tg.grad(lambda x: tnp.sum(tnp.cos(x) * x * x))
            attempt("child: a new function compiled in the foreground", lambda: fresh(x),
                    2 * x * np.cos(x) - x * x * np.sin(x))
            attempt("child: a function the parent was compiling", lambda: parents[0](x), want(1.0))
        else:
            attempt("child: a function the parent was compiling", lambda: parents[0](x), want(1.0))
            fresh = tg.grad(make(7.0))
            attempt("child: a new function (background compile)", lambda: fresh(x), want(7.0))
            tg.wait_for_compiles()
            attempt("child: the parent's function after wait_for_compiles", lambda: parents[0](x), want(1.0))
            attempt("child: the new function after wait_for_compiles", lambda: fresh(x), want(7.0))


    parents = [tg.grad(make(float(c))) for c in (1, 2, 3, 4)]
    started = time.monotonic()
    for c, function in enumerate(parents, start=1):
        attempt(f"parent: first call {c}", lambda: function(x), want(float(c)))  # starts a background compile
    children = []
    for delay in (0.02, 0.1, 0.25, 0.5, 0.9):  # so that some land while numba compiles
        while time.monotonic() - started < delay:
            time.sleep(0.002)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                child()
                code = 1 if failures else 0
                for failure in failures:
                    print(f"fork at {delay} s: {failure}", file=sys.stderr)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children.append((delay, pid, time.monotonic()))
    statuses = {}
    for delay, pid, forked in children:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                statuses[delay] = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() - forked > child_timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                statuses[delay] = "hung"
                break
            time.sleep(0.01)
    for delay, status in statuses.items():
        if status != 0:
            failures.append(f"child forked at {delay} s: " + (
                f"still running after {child_timeout} s (killed)" if status == "hung" else f"exit code {status}"))
    tg.wait_for_compiles()
    for c, function in enumerate(parents, start=1):
        attempt(f"parent: call {c} after wait_for_compiles", lambda: function(x), want(float(c)))
    finish(children=statuses)
"""


def test_a_child_forked_during_a_background_compile_can_compile_in_the_foreground(tmp_path):
    run(FORK_SCRIPT, tmp_path, "fork", args=["foreground", 15]).check()


def test_wait_for_compiles_returns_in_a_forked_child(tmp_path):
    run(FORK_SCRIPT, tmp_path, "fork", args=["wait", 15]).check()


FORK_INTERRUPTED_SCRIPT = """
    import os
    import signal
    import threading
    import time

    import numba
    from numba.core.compiler_lock import global_compiler_lock

    import tracegrad as tg
    import tracegrad.numpy as tnp
    from tracegrad import concurrency

    def compile_elsewhere():  # a numba compile in another thread: fork waits for it
        with global_compiler_lock:
            time.sleep(1.5)

    worker = threading.Thread(target=compile_elsewhere)
    worker.start()
    time.sleep(0.2)
    threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()  # Ctrl-C during fork's wait
    interrupted_after_fork = False
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        time.sleep(1.0)  # the Ctrl-C held back arrives once fork has returned
    except KeyboardInterrupt:
        interrupted_after_fork = True
    worker.join()
    check("the Ctrl-C reached the program after the fork", interrupted_after_fork, True)
    check("the compile thread's lock is free", concurrency._job_lock.locked(), False)
    x = np.linspace(-1.0, 1.0, 5)
    f = tg.grad(lambda x: tnp.sum(tnp.tanh(x) * x))
    attempt("first call", lambda: f(x), np.tanh(x) + x * (1 - np.tanh(x) ** 2))
    check("the background compile finishes", tg.wait_for_compiles(60), True)
    attempt("call with numba's code", lambda: f(x), np.tanh(x) + x * (1 - np.tanh(x) ** 2))
    finish()
"""


def test_ctrl_c_while_fork_waits_for_a_compile_leaves_no_lock_held(tmp_path):
    run(FORK_INTERRUPTED_SCRIPT, tmp_path, "fork_interrupted").check()


FORK_EXIT_SCRIPT = """
    import os
    import time

    import tracegrad as tg
    import tracegrad.numpy as tnp

    x = np.linspace(-1.0, 1.0, 7)
    functions = [tg.grad(lambda x, c=c: tnp.sum(tnp.sin(x * c) * tnp.exp(x) * c)) for c in (1.0, 2.0, 3.0, 4.0)]
    for function in functions:
        function(x)  # four compiles queued in the parent
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # a child that never calls tracegrad, leaving as a script does (atexit runs)
        raise SystemExit(min(tg.cache_info()["pending_compiles"], 100))
    _, status = os.waitpid(pid, 0)
    child_seconds = time.monotonic() - started
    check("the child's compile queue started empty", os.waitstatus_to_exitcode(status), 0)
    check("the child did not compile the parent's queue before it could leave", child_seconds < 4.0, True)
    tg.wait_for_compiles()
    for c, function in zip((1.0, 2.0, 3.0, 4.0), functions):
        attempt(f"parent's function {c}", lambda: function(x), (c * np.cos(x * c) + np.sin(x * c)) * np.exp(x) * c)
    finish(child_seconds=child_seconds)
"""


def test_a_forked_child_leaves_the_parents_compiles_to_the_parent(tmp_path):
    run(FORK_EXIT_SCRIPT, tmp_path, "fork_exit").check()


FORK_WHILE_GENERATING_SCRIPT = """
    import os
    import signal
    import threading
    import time

    import tracegrad as tg
    from tracegrad import codegen

    tg.config.compile_in_background = False


    def doubled(x):
        return x * 2.0


    def tripled(x):
        return x * 3.0


    first, second = tg.jit(doubled).lower(1.0), tg.jit(tripled).lower(1.0)
    inside, release = threading.Event(), threading.Event()
    real_generate_source = codegen.generate_source


    def generate_source(program, name, **options):
        if name == "jit_doubled":  # another thread is writing this source when the process forks
            inside.set()
            release.wait(60)
        return real_generate_source(program, name, **options)


    codegen.generate_source = generate_source
    writer = threading.Thread(target=lambda: first.source)
    writer.start()
    check("the other thread is writing its source", inside.wait(60), True)
    pid = os.fork()
    if pid == 0:  # the child writes and runs another program's source
        os._exit(0 if "def jit_tripled" in second.source and second(1.0) == 3.0 else 1)
    forked = time.monotonic()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            check("the child's exit code", os.waitstatus_to_exitcode(status), 0)
            break
        if time.monotonic() - forked > 20:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            failures.append("the child still waited for a source after 20 s (killed)")
            break
        time.sleep(0.01)
    release.set()
    writer.join()
    attempt("the parent's first program", lambda: first(1.0), 2.0)
    attempt("the parent's second program", lambda: second(1.0), 3.0)
    finish()
"""


def test_a_child_forked_while_a_thread_writes_a_source_writes_its_own(tmp_path):
    run(FORK_WHILE_GENERATING_SCRIPT, tmp_path, "fork_while_generating").check()
