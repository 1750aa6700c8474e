"""A team's setup on one machine, on 127.0.0.1 only: PostgreSQL, an MLflow tracking server on it
with proxied artifacts, and a Ray cluster of a head node plus one worker node.

    make cluster-up     # python cluster/local.py up: starts everything, writes .cluster.env
    source .cluster.env # RAY_ADDRESS, MLFLOW_TRACKING_URI, MNIST_NP_OPTUNA_STORAGE
    make cluster-status # python cluster/local.py status: each part up or down; RESTART=1 starts what is down
                        # (RESTART=ray_worker: that part only)
    make cluster-down   # python cluster/local.py down: stops what `up` started, and what serves its ports

It is the local stand-in for a real cluster (docs/scaling.md maps each part to its production
counterpart). PostgreSQL is the distribution's (apt-get install postgresql; $PG_BIN overrides where
its programs are); run as root, it runs as the `postgres` user. Its data, the artifacts and the logs
stay in .cluster/ between runs; `down` stops the processes and leaves the data.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from mnist_np import processes
from mnist_np.tracking.server import server_env

REPO = Path(__file__).resolve().parents[1]
STATE_DIR = REPO / ".cluster"  # --dir
ENV_FILE = REPO / ".cluster.env"  # --env-file
BIN = Path(sys.executable).parent
HOST = processes.HOST
PARTS = ("postgres", "mlflow", "ray_head", "ray_worker")
RAY_CPUS_PER_NODE = 1
START_TIMEOUT_S = 120
# Ray's switch that keeps a client's own address at 127.0.0.1 (cluster/ray_node.py does it for the nodes).
RAY_CLIENT_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def ray_auth_env() -> dict[str, str]:
    """Ray's token authentication, for the nodes and every client: the cluster's own token in its
    folder. Ray 2.59+ turns token authentication on for a local `ray.init()` and leaves its token in
    ~/.ray/auth_token, after which a node started without a mode refuses clients that have none;
    with the mode and token named on both sides, neither depends on what ran on this machine before."""
    token = STATE_DIR / "ray_auth_token"
    if not token.exists():
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        token.touch(mode=0o600)
        token.write_text(secrets.token_hex(32))
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


class ClusterError(Exception):
    pass


def state_file() -> Path:
    """Pids and ports of what `up` started."""
    return STATE_DIR / "state.json"


def ports_file() -> Path:
    """The ports of the last `up`, kept after `down`: the next `up` takes them again where they are
    free, so a shell that sourced .cluster.env before still points at the cluster."""
    return STATE_DIR / "ports.json"


def port_for(part: str) -> int:
    """`part`'s port of the last `up` if it is free now, else a free one."""
    try:
        last = json.loads(ports_file().read_text()).get(part)
    except (OSError, ValueError):
        last = None
    if last and processes.port_free(int(last)):
        return int(last)
    return processes.free_port()


def save(state: dict) -> None:
    state_file().write_text(json.dumps(state, indent=2))
    ports_file().write_text(json.dumps({name: part["port"] for name, part in state.items() if "port" in part}))


def pg_bin() -> Path:
    """Where PostgreSQL's server programs are: $PG_BIN, else the newest Debian/Ubuntu version."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    if shutil.which("pg_ctl"):
        return Path(shutil.which("pg_ctl")).parent
    raise ClusterError("PostgreSQL not found: install it (apt-get install postgresql) or set PG_BIN to its bin folder")


def as_postgres(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: then run it as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def wait_until(check, what: str, log: Path, proc: subprocess.Popen) -> None:
    """Until `check()` holds; a ClusterError with the log's tail if `proc` ends or time runs out first."""

    def ended() -> bool:
        return proc.poll() is not None

    if not processes.wait_until(lambda: ended() or check(), START_TIMEOUT_S, 0.5) or ended():
        tail = log.read_text()[-3000:] if log.exists() else ""
        raise ClusterError(f"{what} did not start (log {log}):\n{tail}")


def spawn(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """A long-running process in its own session (so Ctrl-C in this terminal does not reach it)."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )


def start_postgres(state: dict, port: int | None = None) -> str:
    bindir, data = pg_bin(), STATE_DIR / "postgres"
    if not (data / "PG_VERSION").exists():
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        subprocess.run(
            as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "mlflow"]),
            check=True,
            capture_output=True,
        )
    port = port or port_for("postgres")
    log = STATE_DIR / "postgres.log"
    if os.geteuid() == 0:
        log.touch()
        shutil.chown(log, "postgres", "postgres")
    options = f"-h {HOST} -p {port} -k {data}"
    subprocess.run(
        as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start"]),
        check=True,
        capture_output=True,
    )
    state["postgres"] = {"pid": int((data / "postmaster.pid").read_text().split()[0]), "port": port, "data": str(data)}
    for database in ("mlflow", "optuna"):  # MLflow and Optuna each migrate their own schema
        done = subprocess.run(
            as_postgres([str(bindir / "createdb"), "-h", HOST, "-p", str(port), "-U", "mlflow", database]),
            capture_output=True,
            text=True,
        )
        if done.returncode and "already exists" not in done.stderr:
            raise ClusterError(f"createdb {database}: {done.stderr.strip()}")
    return f"postgresql+psycopg2://mlflow@{HOST}:{port}"


def spawn_mlflow(state: dict, database: str, port: int | None = None) -> subprocess.Popen:
    """The tracking server on `database`, started; wait_for_mlflow waits until it answers (it
    migrates its database first: ~15 s, during which `up` starts Ray)."""
    port = port or port_for("mlflow")
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"{database}/mlflow",
        "--artifacts-destination",
        str(STATE_DIR / "artifacts"),  # proxied: clients upload through the server, no storage credentials
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "2",
    ]
    proc = spawn(cmd, STATE_DIR / "mlflow.log", server_env())
    state["mlflow"] = {"pid": proc.pid, "port": port}
    return proc


def mlflow_url(state: dict) -> str:
    return f"http://{HOST}:{state['mlflow']['port']}"


def wait_for_mlflow(state: dict, proc: subprocess.Popen) -> str:
    wait_until(lambda: processes.answers(mlflow_url(state)), "the MLflow server", STATE_DIR / "mlflow.log", proc)
    return mlflow_url(state)


def ray_command(*args: str) -> list[str]:
    """`ray start` through cluster/ray_node.py, which keeps a node's address, and so what it listens
    on, at 127.0.0.1; `--block`, so stopping its pid stops the node."""
    ray = [str(BIN / "python"), str(Path(__file__).with_name("ray_node.py"))]
    common = ["--node-ip-address", HOST, "--num-cpus", str(RAY_CPUS_PER_NODE), "--block", "--disable-usage-stats"]
    return [*ray, "start", *args, *common]


def ray_env(tracking_uri: str) -> dict:
    """Ray's own processes (and the workers that run jobs) get the cluster's tracking server; not the
    clients' switch, with which a worker node refuses to start (a shell that sourced .cluster.env has it)."""
    env = {key: value for key, value in os.environ.items() if key not in RAY_CLIENT_ENV}
    env.update(MLFLOW_TRACKING_URI=tracking_uri, RAY_USAGE_STATS_ENABLED="0", **ray_auth_env())
    return env


def start_ray_head(state: dict, tracking_uri: str, port: int | None = None) -> str:
    port = port or port_for("ray_head")
    address = f"{HOST}:{port}"
    log = STATE_DIR / "ray-head.log"
    head = spawn(ray_command("--head", "--port", str(port), "--include-dashboard=false"), log, ray_env(tracking_uri))
    state["ray_head"] = {"pid": head.pid, "port": port}
    wait_for_node(address, set(), "the Ray head node", log, head)
    return address


def start_ray_worker(state: dict, tracking_uri: str, address: str) -> None:
    # A node killed a moment ago may still count as alive for a while: wait for a node not seen before.
    before = ray_nodes(address)
    log = STATE_DIR / "ray-worker.log"
    worker = spawn(ray_command("--address", address), log, ray_env(tracking_uri))
    state["ray_worker"] = {"pid": worker.pid}
    wait_for_node(address, before, "the Ray worker node", log, worker)


def _alive_nodes_code(address: str, before: set[str]) -> str:
    """A Ray client that connects to `address` (ray.init waits while the head starts), then asks the
    cluster every 0.25 s until a node not in `before` is alive, and prints the alive nodes' ids."""
    return (
        f"import ray, time\nray.init(address={address!r}, logging_level='ERROR')\n"
        "while True:\n"
        "    alive = [n['NodeID'] for n in ray.nodes() if n['Alive']]\n"
        f"    if set(alive) - {set(before)!r}:\n"
        "        print('ALIVE_NODES', *alive, flush=True)\n"
        "        break\n"
        "    time.sleep(0.25)\n"
    )


def _ray_client(code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "python"), "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **RAY_CLIENT_ENV, **ray_auth_env()},
    )


def _alive(stdout: str) -> set[str] | None:
    found = [line.split()[1:] for line in stdout.splitlines() if line.startswith("ALIVE_NODES")]
    return set(found[-1]) if found else None  # Ray may print warnings on stdout too


def ray_nodes(address: str) -> set[str]:
    """The ids of the alive nodes of the cluster at `address` (none while it is not up)."""
    client = _ray_client(_alive_nodes_code(address, set()))
    try:
        out, _ = client.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        client.kill()
        client.communicate()
        return set()
    return (_alive(out) or set()) if client.returncode == 0 else set()


def wait_for_node(address: str, before: set[str], what: str, log: Path, node: subprocess.Popen) -> None:
    """Until a node not in `before` is alive in the cluster at `address`: one client that connects
    once and asks every 0.25 s (a client started for each question cost ~1.4 s of imports and
    connecting, and up to 10 s where it connected while a node joined); a new one if it could not
    connect. A ClusterError if `node` (the process starting it) ends or time runs out first."""
    client = [_ray_client(_alive_nodes_code(address, before))]

    def joined() -> bool:
        if client[0].poll() is None:
            return False
        if client[0].returncode == 0 and _alive(client[0].stdout.read()) is not None:
            return True
        client[0] = _ray_client(_alive_nodes_code(address, before))  # the head was not answering yet
        return False

    try:
        wait_until(joined, what, log, node)
    finally:
        if client[0].poll() is None:
            client[0].kill()
        client[0].communicate()


def up() -> None:
    if state_file().exists():
        raise ClusterError(f"a cluster is already up ({state_file()}); run `make cluster-down` first")
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    state: dict = {}
    try:  # the state is saved after each part, so `down` can stop a half-started cluster
        database = start_postgres(state)
        save(state)
        print("PostgreSQL up; starting the MLflow server and Ray (about half a minute)", flush=True)
        server = spawn_mlflow(state, database)  # it migrates its database while Ray starts
        save(state)
        tracking = mlflow_url(state)
        address = start_ray_head(state, tracking)
        save(state)
        start_ray_worker(state, tracking, address)
        save(state)
        wait_for_mlflow(state, server)
    except BaseException:
        stop(state)
        state_file().unlink(missing_ok=True)
        raise
    ENV_FILE.write_text(
        "# Written by `make cluster-up`; `source .cluster.env` to use the cluster, `make cluster-down` to stop it.\n"
        f"export RAY_ADDRESS={address}\n"
        "# Ray clients keep 127.0.0.1 as it is (Ray would swap in the machine's address; cluster/ray_node.py)\n"
        "# and authenticate with the cluster's token (ray_auth_env in cluster/local.py)\n"
        + "".join(f"export {key}={value}\n" for key, value in {**RAY_CLIENT_ENV, **ray_auth_env()}.items())
        + f"export MLFLOW_TRACKING_URI={tracking}\n"
        f"export MNIST_NP_OPTUNA_STORAGE={database}/optuna\n"
    )
    print(f"PostgreSQL     {database} (databases mlflow, optuna)")
    print(f"MLflow server  {tracking}  (artifacts proxied into {STATE_DIR / 'artifacts'})")
    print(f"Ray cluster    {address}  (head + 1 worker, {RAY_CPUS_PER_NODE} CPU each)")
    print(f"\nUse it:  source {ENV_FILE}")
    print("         python pipelines/sweep.py -m hydra/launcher=mnist_ray train.lr=0.05,0.1 model.hidden_size=64,256")
    print("         python pipelines/sweep.py -m hydra/sweeper=mnist_optuna hydra.sweeper.study_name=team")
    print("Stop it: make cluster-down")


def _terminate(pids: list[int], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop processes we started and their process groups (what they spawned) together, then wait
    for them; what is still alive after `timeout` is killed."""

    def send(pid: int, signum: int) -> None:
        for kill in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(pid, signum)

    for pid in pids:
        send(pid, sig)
    processes.wait_until(lambda: not any(processes.alive(pid) for pid in pids), timeout)
    for pid in pids:
        if processes.alive(pid):
            send(pid, signal.SIGKILL)


def tracking_servers(state: dict) -> list[int]:
    """The `mlflow server` processes serving the tracking server's recorded port now (one restarted
    since `up` has a new pid): from each process listening there (a worker of the server's, often), up
    its ancestors of the same process group while they are MLflow's."""
    roots = set()
    for pid in processes.listening_on(state.get("mlflow", {}).get("port", 0)):
        with contextlib.suppress(processes.psutil.Error):
            proc = processes.psutil.Process(pid)
            while (parent := proc.parent()) and os.getpgid(parent.pid) == os.getpgid(pid):
                if "mlflow" not in " ".join(parent.cmdline()):
                    break
                proc = parent
            roots.add(proc.pid)
    return sorted(roots)


def stop(state: dict) -> None:
    # Ray first (its workers may still log to MLflow), both nodes at once: `ray start --block`
    # cleans up its node on Ctrl-C, usually within seconds; twice in four test runs both outlived
    # a 30 s wait one after the other, so they share one shorter wait before being killed.
    ray = [state[name]["pid"] for name in ("ray_worker", "ray_head") if name in state]
    if ray:
        _terminate(ray, signal.SIGINT, timeout=15)
    if "mlflow" in state:  # the server `up` started, and any started on its port since (a restart by hand)
        _terminate(sorted({state["mlflow"]["pid"], *tracking_servers(state)}))
    if "postgres" in state:
        subprocess.run(
            as_postgres([str(pg_bin() / "pg_ctl"), "-D", state["postgres"]["data"], "-m", "fast", "-w", "stop"]),
            capture_output=True,
        )
        _terminate([state["postgres"]["pid"]], timeout=10)


def part_status(state: dict, name: str) -> str | None:
    """Why part `name` is down, or None when it is up (a server answering on its port, a node's
    process alive)."""
    part = state[name]
    if name == "mlflow":
        return None if processes.answers(f"http://{HOST}:{part['port']}") else f"nothing answers on port {part['port']}"
    if name == "postgres":
        ready = subprocess.run([str(pg_bin() / "pg_isready"), "-h", HOST, "-p", str(part["port"])], capture_output=True)
        return None if ready.returncode == 0 else f"pg_isready: no answer on port {part['port']}"
    return None if processes.alive(part["pid"]) else f"its process ({part['pid']}) is gone"


def status(restart: list[str] | None) -> None:
    """Each part: up, or down and why; with `restart`, the parts that are down (of those it names;
    all if it names none) started again on their ports (a Ray head started again takes a new worker
    node with it)."""
    if not state_file().exists():
        print("no cluster is up (make cluster-up)")
        return
    state = json.loads(state_file().read_text())
    down_parts = {name: part_status(state, name) for name in state}
    for name, why in down_parts.items():
        where = f"port {state[name]['port']}" if "port" in state[name] else f"pid {state[name]['pid']}"
        print(f"{name:<11} {'up' if why is None else 'DOWN: ' + why} ({where})")
    dead = [name for name, why in down_parts.items() if why and (not restart or name in restart)]
    if not dead:
        return
    if restart is None:
        print("restart what is down: make cluster-status RESTART=1")
        raise SystemExit(1)
    database = f"postgresql+psycopg2://mlflow@{HOST}:{state['postgres']['port']}"
    tracking, address = mlflow_url(state), f"{HOST}:{state['ray_head']['port']}"
    try:  # the state is saved however this ends, so `down` stops what was started here too
        if "postgres" in dead:
            start_postgres(state, state["postgres"]["port"])
        if "ray_head" in dead:
            _terminate([state["ray_worker"]["pid"]], signal.SIGINT, timeout=15)
            start_ray_head(state, tracking, state["ray_head"]["port"])
            dead.append("ray_worker")
        if "ray_worker" in dead:
            start_ray_worker(state, tracking, address)
        if "mlflow" in dead:
            _terminate(tracking_servers(state))  # a server that listens but no longer answers
            wait_for_mlflow(state, spawn_mlflow(state, database, state["mlflow"]["port"]))
    finally:
        save(state)
    print("restarted: " + ", ".join(dict.fromkeys(dead)))


def down() -> None:
    if not state_file().exists():
        print("no cluster is up")
        return
    state = json.loads(state_file().read_text())
    stop(state)
    left = [name for name, part in state.items() if processes.alive(part["pid"])]
    if left:
        raise ClusterError(f"still running after stop: {left}; see {state_file()}")
    state_file().unlink()
    ENV_FILE.unlink(missing_ok=True)
    print("cluster stopped: " + ", ".join(state))


def main() -> None:
    global STATE_DIR, ENV_FILE  # where this cluster lives, for every function here
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["up", "down", "status"], help="start, stop or check the local cluster")
    parser.add_argument(
        "--restart",
        nargs="*",
        choices=PARTS,
        help="status: start again what is down (of the parts named; all if none is)",
    )
    parser.add_argument("--dir", type=Path, default=STATE_DIR, help="its data, logs and pids (default: .cluster/)")
    parser.add_argument("--env-file", type=Path, default=ENV_FILE, help="the addresses (default: .cluster.env)")
    args = parser.parse_args()
    STATE_DIR, ENV_FILE = args.dir.resolve(), args.env_file.resolve()
    try:
        {"up": up, "down": down, "status": lambda: status(args.restart)}[args.action]()
    except (ClusterError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr.decode(errors="replace").strip() if isinstance(exc, subprocess.CalledProcessError) else ""
        print(f"error: {exc} {detail}".strip(), file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
