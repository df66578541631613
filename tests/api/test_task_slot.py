"""The per-instance task slot (api.md §6): through HTTP under contention, and on the database.

1. Ten ResetAccountPassword calls on one account at once, each from its own
   client: every one waits its turn and answers 200, and the password the
   Redis nodes accept afterwards is the last one set (and the one the
   database holds: ModifyAccountPassword accepts it as the old password).
2. ``TaskSlots`` on SQLite and PostgreSQL: one holder at a time, a released slot
   is free, a busy one is waited for in arrival order up to the bound (and
   only then ``TaskExists``), an expired lease is taken over (and the taker is
   told), a holder known dead at once, a held slot's lease is renewed, and two
   ``TaskSlots`` on separate engines, or in separate processes, respect each
   other.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, insert

from rkvstore.errors import ApiError
from rkvstore.services.tasks import HOLDER, RECONCILE, Task, TaskLost, TaskSlots
from rkvstore.store import repo
from rkvstore.store.db import make_engine, migrate
from rkvstore.store.tables import tasks
from tests.api.instances import (
    MASTER_SLAVE,
    Instance,
    assert_wrongpass,
    can_login,
    new_password,
    provision,
    rpc_client,
)
from tests.conftest import LiveServer

TASK_EXISTS = (400, "TaskExists", "Specified task have existed.")
CALLERS = 10
HTTP_TIMEOUT = 30.0
PROCESS_TIMEOUT = 30.0
CHILD_LEASE = 1.5  # seconds: the holder process's lease


# --------------------------------------------------------------------------- through HTTP


@pytest.fixture(scope="module")
def instance(live_server: LiveServer) -> Iterator[Instance]:
    with provision(live_server, MASTER_SLAVE) as (made,):
        yield made


@dataclass
class Answer:
    password: str
    status: int
    request_id: str
    code: str | None
    message: str | None


def _concurrent_resets(
    server: LiveServer, instance_id: str, account: str, passwords: list[str]
) -> list[Answer]:
    answers: list[Answer | None] = [None] * len(passwords)
    errors: list[BaseException] = []
    # Every caller connects first (a real request), then all send together.
    start = threading.Barrier(len(passwords), timeout=HTTP_TIMEOUT)

    def caller(i: int) -> None:
        try:
            with rpc_client(server) as client:
                client.call("DescribeInstanceAttribute", {"InstanceId": instance_id})
                start.wait()
                response = client.request(
                    "ResetAccountPassword",
                    {
                        "InstanceId": instance_id,
                        "AccountName": account,
                        "AccountPassword": passwords[i],
                    },
                )
                body = response.json()
                answers[i] = Answer(
                    passwords[i],
                    response.status_code,
                    body["RequestId"],
                    body.get("Code"),
                    body.get("Message"),
                )
        except BaseException as exc:  # reported below, with the others
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(passwords))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HTTP_TIMEOUT)
    assert not any(t.is_alive() for t in threads), "a caller got no answer in time"
    assert not errors, errors
    done = [a for a in answers if a is not None]
    assert len(done) == len(passwords)
    return done


def _finished_last(server: LiveServer, winners: list[Answer]) -> Answer:
    """The winner whose access-log line (written when its handler returned) comes last."""
    log = (server.data_dir / "rkvstore.log").read_text()
    order = {
        w.request_id: log.rfind(f"request_id={w.request_id} action=ResetAccountPassword")
        for w in winners
    }
    assert all(pos >= 0 for pos in order.values()), "a winner is missing from the access log"
    return max(winners, key=lambda w: order[w.request_id])


@pytest.mark.parametrize("round_", range(3))
def test_ten_concurrent_resets(live_server: LiveServer, instance: Instance, round_: int) -> None:
    account = f"racer{round_}"
    first = new_password()
    with rpc_client(live_server) as rpc:
        rpc.call(
            "CreateAccount",
            {"InstanceId": instance.instance_id, "AccountName": account, "AccountPassword": first},
        )
        try:
            passwords = [new_password() for _ in range(CALLERS)]
            answers = _concurrent_resets(live_server, instance.instance_id, account, passwords)

            # The slot waits (api.md §6): every call succeeds, one after another.
            assert [(a.status, a.code) for a in answers] == [(200, None)] * CALLERS, answers
            winners = answers

            # Exactly one password works on every node, and it is a winner's.
            working = {
                port: [p for p in passwords if can_login(port, account, p)]
                for port in instance.node_ports
            }
            (current,) = working[instance.port]
            assert all(found == [current] for found in working.values()), working
            assert current in {w.password for w in winners}
            # The slot serialises the winners: the last one the server finished set the
            # password. (Server-side order, from its access log: the order in which the
            # clients read their answers can differ by a scheduling hiccup.)
            last = _finished_last(live_server, winners)
            assert current == last.password, (len(winners), "an earlier winner's password won")
            for port in instance.node_ports:
                assert_wrongpass(port, account, first)

            # The database agrees with Redis: the working password is the stored one.
            fresh = new_password()
            rpc.call(
                "ModifyAccountPassword",
                {
                    "InstanceId": instance.instance_id,
                    "AccountName": account,
                    "OldAccountPassword": current,
                    "NewAccountPassword": fresh,
                },
            )
            for port in instance.node_ports:
                assert can_login(port, account, fresh)
        finally:
            rpc.call("DeleteAccount", {"InstanceId": instance.instance_id, "AccountName": account})


# --------------------------------------------------------------------------- on the database


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    migrate(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def second_engine(engine: Engine, database_url: str) -> Iterator[Engine]:
    """Another engine (its own connection pool) on the same database, as a second process has."""
    eng = make_engine(database_url)
    try:
        yield eng
    finally:
        eng.dispose()


def _task_exists(call: object) -> None:
    assert callable(call)
    with pytest.raises(ApiError) as info:
        call()
    exc = info.value
    assert (exc.http_status, exc.code, exc.message) == TASK_EXISTS


def fail_fast(engine: Engine, **kwargs: float) -> TaskSlots:
    """Slots that answer ``TaskExists`` at once, as with ``RKVSTORE_TASK_WAIT_SECONDS=0``."""
    return TaskSlots(engine, wait_seconds=0, **kwargs)


def test_one_holder_at_a_time(engine: Engine) -> None:
    slots = fail_fast(engine)
    task = slots.acquire("r-slot1", "ResetAccountPassword")
    assert task.instance_id == "r-slot1" and not task.took_over
    _task_exists(lambda: slots.acquire("r-slot1", "CreateAccount"))
    other = slots.acquire("r-slot2", "CreateAccount")  # the slot is per instance
    slots.release(task)
    again = slots.acquire("r-slot1", "CreateAccount")
    assert not again.took_over and again.task_id != task.task_id
    slots.release(again)
    slots.release(other)


def test_hold_releases_however_the_block_ends(engine: Engine) -> None:
    slots = fail_fast(engine)
    with pytest.raises(RuntimeError), slots.hold("r-hold", "DeleteAccount"):
        _task_exists(lambda: slots.acquire("r-hold", "CreateAccount"))
        raise RuntimeError("the task failed")
    slots.release(slots.acquire("r-hold", "CreateAccount"))


def test_expired_lease_is_taken_over(engine: Engine, second_engine: Engine) -> None:
    # The holder is "another process" (its own slots, its own engine): one
    # that stalled, so neither dead nor releasing.
    stalled = fail_fast(second_engine, lease_seconds=0.2)
    short = fail_fast(engine, lease_seconds=0.2)
    dead = stalled.acquire("r-lease", "ResetAccountPassword")
    _task_exists(lambda: short.acquire("r-lease", "ResetAccountPassword"))
    time.sleep(0.3)
    taker = short.acquire("r-lease", "ResetAccountPassword")
    assert taker.took_over and not dead.took_over
    # The dead holder, should it wake, can neither renew nor free the taker's slot.
    assert not stalled.renew(dead)
    stalled.release(dead)
    _task_exists(lambda: short.acquire("r-lease", "CreateAccount"))
    assert short.renew(taker)
    short.release(taker)
    after = short.acquire("r-lease", "CreateAccount")
    assert not after.took_over
    short.release(after)


def test_a_task_taken_over_cannot_record(engine: Engine, second_engine: Engine) -> None:
    """``fence``: the record of a task whose slot another task took over is refused."""
    stalled = fail_fast(engine, lease_seconds=0.2)
    taker_slots = fail_fast(second_engine, lease_seconds=0.2)
    task = stalled.acquire("r-fence", "ResetAccountPassword")
    time.sleep(0.3)
    # Its lease ran out, but nobody took over: what it did may still be recorded.
    with engine.begin() as conn:
        stalled.fence(conn, task)
    # The fence renewed the lease: no takeover right after it.
    _task_exists(lambda: taker_slots.acquire("r-fence", "CreateAccount"))
    time.sleep(0.3)
    taker = taker_slots.acquire("r-fence", "ResetAccountPassword")
    assert taker.took_over
    with pytest.raises(TaskLost), engine.begin() as conn:
        stalled.fence(conn, task)
    with second_engine.begin() as conn:
        taker_slots.fence(conn, taker)
    assert repo_task_action(second_engine, "r-fence") == "ResetAccountPassword"
    taker_slots.release(taker)


def repo_task_action(engine: Engine, instance_id: str) -> str | None:
    with engine.connect() as conn:
        return repo.task_action(conn, instance_id)


def test_held_slot_keeps_its_lease(engine: Engine, second_engine: Engine) -> None:
    """``hold`` renews the lease: a long task is not mistaken for a dead one."""
    holder = fail_fast(engine, lease_seconds=0.3)
    other = fail_fast(second_engine, lease_seconds=0.3)
    with holder.hold("r-renew", "GrantAccountPrivilege"):
        deadline = time.monotonic() + 1.0  # more than three leases
        while time.monotonic() < deadline:
            _task_exists(lambda: other.acquire("r-renew", "CreateAccount"))
            time.sleep(0.1)
    task = other.acquire("r-renew", "CreateAccount")
    assert not task.took_over
    other.release(task)


def test_two_slot_objects_on_one_database(engine: Engine, second_engine: Engine) -> None:
    a, b = fail_fast(engine), fail_fast(second_engine)
    held = a.acquire("r-two", "ResetAccountPassword")
    _task_exists(lambda: b.acquire("r-two", "ResetAccountPassword"))
    b_other = b.acquire("r-two-other", "CreateAccount")
    a.release(held)
    b_held = b.acquire("r-two", "CreateAccount")
    assert not b_held.took_over
    _task_exists(lambda: a.acquire("r-two", "DeleteAccount"))
    _task_exists(lambda: a.acquire("r-two-other", "DeleteAccount"))
    b.release(b_held)
    b.release(b_other)


def test_racing_acquirers_one_winner(engine: Engine, database_url: str) -> None:
    """Eight engines race for one slot, failing fast: one wins, the others get TaskExists."""
    engines = [make_engine(database_url) for _ in range(8)]
    try:
        results: list[str] = []
        lock = threading.Lock()
        start = threading.Barrier(len(engines), timeout=30)

        def race(eng: Engine) -> None:
            slots = fail_fast(eng)
            start.wait()
            try:
                slots.acquire("r-race", "ResetAccountPassword")
                outcome = "won"
            except ApiError as exc:
                outcome = exc.code
            with lock:
                results.append(outcome)

        threads = [threading.Thread(target=race, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(results) == ["TaskExists"] * 7 + ["won"]
    finally:
        for eng in engines:
            eng.dispose()


# --------------------------------------------------------------------------- waiting for the slot


def test_racing_waiters_all_get_the_slot_one_at_a_time(engine: Engine, database_url: str) -> None:
    """Eight engines (as eight processes) wait for one slot: each gets it, never two at once."""
    engines = [make_engine(database_url) for _ in range(8)]
    try:
        holding = [0]
        most = [0]
        got: list[bool] = []
        lock = threading.Lock()
        start = threading.Barrier(len(engines), timeout=30)

        def wait_turn(eng: Engine) -> None:
            slots = TaskSlots(eng, wait_seconds=20)
            start.wait()
            with slots.hold("r-queue", "ResetAccountPassword") as task:
                with lock:
                    holding[0] += 1
                    most[0] = max(most[0], holding[0])
                time.sleep(0.02)
                with lock:
                    holding[0] -= 1
                    got.append(not task.took_over)

        threads = [threading.Thread(target=wait_turn, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert got == [True] * len(engines)
        assert most[0] == 1
    finally:
        for eng in engines:
            eng.dispose()


def _waiting(slots: TaskSlots, instance_id: str) -> int:
    with slots._queue_lock:
        return len(slots._queues.get(instance_id, ()))


def test_waiters_of_one_process_are_served_in_arrival_order(engine: Engine) -> None:
    slots = TaskSlots(engine, wait_seconds=20)
    held = slots.acquire("r-order", "DeleteAccount")
    order: list[int] = []
    errors: list[BaseException] = []

    def waiter(i: int) -> None:
        try:
            with slots.hold("r-order", "ResetAccountPassword"):
                order.append(i)
        except BaseException as exc:
            errors.append(exc)

    threads = []
    for i in range(6):
        thread = threading.Thread(target=waiter, args=(i,))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 10  # this one is queued before the next arrives
        while _waiting(slots, "r-order") < i + 1:
            assert time.monotonic() < deadline, "a waiter never queued"
            time.sleep(0.005)
    slots.release(held)
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert order == list(range(6))


def test_a_wait_ends_with_task_exists_at_the_bound_not_before(
    engine: Engine, second_engine: Engine
) -> None:
    holder = fail_fast(second_engine)  # another process's task, alive and busy
    held = holder.acquire("r-bound", "CreateAccount")
    slots = TaskSlots(engine, wait_seconds=0.6)
    started = time.monotonic()
    _task_exists(lambda: slots.acquire("r-bound", "ResetAccountPassword"))
    assert time.monotonic() - started >= 0.6
    holder.release(held)


def test_a_release_in_another_process_is_seen_while_waiting(
    engine: Engine, second_engine: Engine
) -> None:
    holder = fail_fast(second_engine)
    held = holder.acquire("r-poll", "CreateAccount")
    timer = threading.Timer(0.3, holder.release, args=(held,))
    timer.start()
    try:
        task = TaskSlots(engine, wait_seconds=20).acquire("r-poll", "ResetAccountPassword")
    finally:
        timer.join()
    assert not task.took_over
    TaskSlots(engine).release(task)


def test_a_waiting_call_costs_next_to_no_cpu(engine: Engine, second_engine: Engine) -> None:
    """The first waiter polls with a backoff, the others sleep until woken."""
    holder = fail_fast(second_engine)
    held = holder.acquire("r-cpu", "CreateAccount")
    slots = TaskSlots(engine, wait_seconds=1.5)
    used: list[float] = []

    def wait() -> None:
        cpu = time.thread_time()
        with contextlib.suppress(ApiError):
            slots.acquire("r-cpu", "ResetAccountPassword")
        used.append(time.thread_time() - cpu)

    threads = [threading.Thread(target=wait) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    holder.release(held)
    assert len(used) == 4
    # 1.5 s of waiting each: a handful of polls (the first), or none (the rest).
    assert sum(used) < 0.3, used


def test_fail_fast_never_goes_ahead_of_waiters(engine: Engine) -> None:
    slots = TaskSlots(engine, wait_seconds=20)
    held = slots.acquire("r-jump", "CreateAccount")
    box: list[object] = []
    thread = threading.Thread(target=lambda: box.append(slots.acquire("r-jump", "DeleteAccount")))
    thread.start()
    deadline = time.monotonic() + 10
    while _waiting(slots, "r-jump") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    slots.release(held)
    # Released, but a caller is waiting: a reconciler pass (wait=0) does not jump ahead.
    with contextlib.suppress(ApiError):
        slots.release(slots.acquire("r-jump", RECONCILE, wait=0))
    thread.join(30)
    assert len(box) == 1
    assert isinstance(box[0], Task)
    slots.release(box[0])


def _foreign_holder(engine: Engine, instance_id: str, holder: str, lease: float) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(tasks).values(
                instance_id=instance_id,
                task_id=f"t-{instance_id}",
                action="ResetAccountPassword",
                holder=holder,
                lease_expires_at=time.time() + lease,
            )
        )


def test_a_holder_on_another_host_is_taken_over_only_after_its_lease(engine: Engine) -> None:
    _foreign_holder(engine, "r-far", "elsewhere:4242:99:0123456789ab:4026531836", 0.5)
    slots = fail_fast(engine)
    _task_exists(lambda: slots.acquire("r-far", "CreateAccount"))
    time.sleep(0.6)
    task = slots.acquire("r-far", "CreateAccount")
    assert task.took_over
    slots.release(task)


def test_an_older_holder_format_is_waited_out(engine: Engine) -> None:
    _foreign_holder(engine, "r-old", f"{socket.gethostname()}:1", 60)
    _task_exists(lambda: fail_fast(engine).acquire("r-old", "CreateAccount"))


def test_a_task_this_process_ended_but_could_not_delete_is_taken_at_once(
    engine: Engine,
) -> None:
    """The database was away when the task ended: its row stays, its slot does not."""
    _foreign_holder(engine, "r-mine", HOLDER, 60)  # ours by holder, yet no live task of ours
    task = fail_fast(engine).acquire("r-mine", "CreateAccount")
    assert task.took_over
    TaskSlots(engine).release(task)


# --------------------------------------------------------------------------- two real processes

_HOLDER_SCRIPT = textwrap.dedent(
    """
    import sys
    from rkvstore.services.tasks import TaskSlots
    from rkvstore.store.db import make_engine

    url, lease = sys.argv[1], float(sys.argv[2])
    slots = TaskSlots(make_engine(url), lease_seconds=lease, wait_seconds=0)
    task = slots.acquire("r-proc", "ResetAccountPassword")
    print("held", flush=True)
    if sys.stdin.readline().strip() == "release":
        slots.release(task)
        print("released", flush=True)
    """
)


@pytest.fixture
def holder_process(database_url: str) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER_SCRIPT, database_url, str(CHILD_LEASE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert _read_line(process) == "held"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(PROCESS_TIMEOUT)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                stream.close()


def _read_line(process: subprocess.Popen[str]) -> str:
    """One line from the child, bounded."""
    stdout = process.stdout
    assert stdout is not None
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(PROCESS_TIMEOUT)
    assert box, "the holder process said nothing in time"
    return box[0].strip()


def test_another_process_holding_the_slot(
    engine: Engine, holder_process: subprocess.Popen[str]
) -> None:
    slots = fail_fast(engine)
    _task_exists(lambda: slots.acquire("r-proc", "CreateAccount"))
    assert holder_process.stdin is not None
    holder_process.stdin.write("release\n")
    holder_process.stdin.flush()
    assert _read_line(holder_process) == "released"
    task = slots.acquire("r-proc", "CreateAccount")
    assert not task.took_over
    slots.release(task)


def test_a_dead_process_slot_is_taken_over_at_once(
    engine: Engine, holder_process: subprocess.Popen[str]
) -> None:
    """Same host, its process gone (kill -9): no need to wait out its lease."""
    slots = fail_fast(engine)
    _task_exists(lambda: slots.acquire("r-proc", "CreateAccount"))  # alive: busy
    holder_process.kill()  # SIGKILL: no release, no renewal
    holder_process.wait(PROCESS_TIMEOUT)
    task = slots.acquire("r-proc", "CreateAccount")
    assert task.took_over
    slots.release(task)


def test_dead_holders_are_freed_at_start(
    engine: Engine, holder_process: subprocess.Popen[str]
) -> None:
    _foreign_holder(engine, "r-alive-elsewhere", "elsewhere:1:2:0123456789ab:1", 60)
    holder_process.kill()
    holder_process.wait(PROCESS_TIMEOUT)
    assert TaskSlots(engine).take_over_dead_holders() == ["r-proc"]
    assert repo_task_action(engine, "r-proc") is None
    assert repo_task_action(engine, "r-alive-elsewhere") == "ResetAccountPassword"


def test_accounts_are_unavailable_while_a_task_changes_them(
    live_server: LiveServer, instance: Instance
) -> None:
    """api.md §3: Unavailable while a task is changing it (a slot any process may hold);
    a task on one account leaves the others Available."""
    from sqlalchemy import delete

    from tests.api.instances import rpc_client

    def statuses() -> dict[str, str]:
        with rpc_client(live_server) as client:
            body = client.call("DescribeAccounts", {"InstanceId": instance.instance_id})
        return {a["AccountName"]: a["AccountStatus"] for a in body["Accounts"]["Account"]}

    def hold(account: str | None) -> None:
        with engine.begin() as conn:  # another process's task, as the database shows it
            conn.execute(
                insert(tasks).values(
                    instance_id=instance.instance_id,
                    task_id="t-other",
                    action="GrantAccountPrivilege",
                    account_name=account,
                    holder="elsewhere:1:2:0123456789ab:1",
                    lease_expires_at=time.time() + 60,
                )
            )

    engine = make_engine(f"sqlite:///{live_server.data_dir / 'rkvstore.db'}")
    try:
        names = sorted(statuses())
        assert len(names) >= 2
        assert set(statuses().values()) == {"Available"}
        for account, unavailable in ((names[-1], {names[-1]}), (None, set(names))):
            hold(account)
            try:
                shown = statuses()
                assert {n for n, s in shown.items() if s == "Unavailable"} == unavailable
            finally:
                with engine.begin() as conn:
                    conn.execute(delete(tasks).where(tasks.c.task_id == "t-other"))
        assert set(statuses().values()) == {"Available"}
    finally:
        engine.dispose()
