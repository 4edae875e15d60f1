"""A workshop on one machine, measured: N simulated students on deploy/jupyterhub/, concurrently.

    sudo .venv/bin/python tools/hub_load.py --students 10 [--notebooks 00,01,02,03] [--json out.json]

Runs as root (the hub's LocalProcessSpawner starts each student's server as the student's own account):

1. creates the accounts ``qlstudent01..NN`` (``deploy/jupyterhub/add_students.sh``; removed at the end);
2. warms the shared numba cache once (``python -m quantlab.warmup`` into ``--cache``, root-owned, so
   read-only for the students) unless it is warm already;
3. starts the hub from ``deploy/jupyterhub/jupyterhub_config.py`` on 127.0.0.1 (workshop mode
   QUANTLAB_QUICK=1, the shared cache, configurable-http-proxy from npm);
4. every student, each in a thread, at once: logs in through the hub's login form (class password),
   gets a server through the hub's REST API, starts a kernel through the server's REST API (via the
   hub's proxy) and executes every code cell of the notebooks over the kernel's websocket, in order,
   with a numba compile counter (``quantlab.warmup.CompileCounter``) installed first;
5. samples, once a second, the memory of each student's processes (their uid): RSS and PSS (PSS counts a
   page shared by k processes as 1/k: the sum of PSS is the RAM really used; the model files are mmap'd
   by every kernel and shared).

Reports per student: seconds to a running server, seconds from the first cell's request to the first
output, seconds per notebook, the kernel's CPU seconds (user + system: the load-independent cost), peak
RSS and PSS of the student's processes, the kernel's compiles (must be 0), errors; and the machine: peak used RAM over the baseline, load averages, cores. Exit status 0 when
every student ran every cell without error and compiled nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import pwd
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import nbformat
import psutil
import requests
import websocket

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "jupyterhub"

PROBE_FIRST = (
    "import quantlab.warmup as _qw\n_qc = _qw.CompileCounter()\n"
    "import numba as _nb, os as _os\nprint('PROBE-START', _os.getpid(), _nb.config.CACHE_DIR)"
)
PROBE_LAST = (
    "import json as _j, resource as _r, gc as _gc, numba.core.registry as _reg\n"
    "_hits = sum(sum(d.stats.cache_hits.values()) for d in _gc.get_objects()\n"
    "            if isinstance(d, _reg.CPUDispatcher))   # every kernel, closures (factories) included\n"
    "print('PROBE', _j.dumps({'compiles': _qc.count, 'compiled': _qc.names[:8], 'cache_hits': _hits, "
    "'maxrss_mb': _r.getrusage(_r.RUSAGE_SELF).ru_maxrss / 1024, "
    "'cpu_s': _r.getrusage(_r.RUSAGE_SELF).ru_utime + _r.getrusage(_r.RUSAGE_SELF).ru_stime}))"
)


def proxy_command() -> str | None:
    """configurable-http-proxy: on PATH (npm install -g) or installed by `make proxy` into .cache/npm."""
    import shutil

    local = ROOT / ".cache" / "npm" / "node_modules" / ".bin" / "configurable-http-proxy"
    return shutil.which("configurable-http-proxy") or (str(local) if local.exists() else None)


def student_cannot_start(python: str, uid: int = 65534) -> str | None:
    """Why an account without privileges cannot start a server from the hub environment ``python``, or None.

    Checked as the spawner runs it: ``jupyterhub-singleuser`` executed through a shell as that account, so the
    script's interpreter is looked up without root's capabilities. (``setpriv ... python -c pass`` is no such
    check: setpriv's own exec still resolves a path under /root, and Python then falls back to /usr's
    standard library, so it passed for a venv made from root's pyenv while every spawn failed and the hub
    answered 500.)"""
    singleuser = pathlib.Path(python).with_name("jupyterhub-singleuser")
    if not singleuser.exists():
        return f"{singleuser} does not exist: JupyterHub is not installed in {python}'s environment"
    as_student = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
    cmd = [*as_student, "/bin/sh", "-c", 'exec "$0" --version', str(singleuser)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        return f"another account cannot run {singleuser} ({why[:160]}): its interpreter must be readable by students"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notebook_cells(names: list[str]) -> list[tuple[str, list[str]]]:
    out = []
    for n in names:
        (path,) = (ROOT / "notebooks").glob(f"{n}_*.ipynb")
        nb = nbformat.read(path, as_version=4)
        out.append((path.stem, [c.source for c in nb.cells if c.cell_type == "code"]))
    return out


class Kernel:
    """One kernel of a student's server, driven over its websocket (Jupyter messaging protocol, JSON)."""

    def __init__(self, base: str, token: str):
        self.base, self.token = base, token
        r = requests.post(f"{base}/api/kernels", headers=self._h(), json={"name": "python3"}, timeout=120)
        r.raise_for_status()
        self.id = r.json()["id"]
        ws_url = base.replace("http://", "ws://") + f"/api/kernels/{self.id}/channels"
        self.ws = websocket.create_connection(ws_url, header=[f"Authorization: token {token}"], timeout=900)
        self.session = uuid.uuid4().hex

    def _h(self):
        return {"Authorization": f"token {self.token}"}

    def execute(self, code: str, on_first_output=None, timeout: float = 900) -> tuple[list[str], str | None]:
        """Run ``code``; returns (text outputs, error or None). ``on_first_output`` is called at the first
        output message (stream, display_data, execute_result, error)."""
        msg_id = uuid.uuid4().hex
        self.ws.send(
            json.dumps(
                {
                    "header": {
                        "msg_id": msg_id,
                        "msg_type": "execute_request",
                        "username": "hub_load",
                        "session": self.session,
                        "version": "5.3",
                        "date": "",
                    },
                    "parent_header": {},
                    "metadata": {},
                    "channel": "shell",
                    "content": {
                        "code": code,
                        "silent": False,
                        "store_history": True,
                        "user_expressions": {},
                        "allow_stdin": False,
                        "stop_on_error": True,
                    },
                }
            )
        )
        texts, err, idle, replied = [], None, False, False
        deadline = time.monotonic() + timeout
        while not (idle and replied):
            if time.monotonic() > deadline:
                return texts, f"timeout after {timeout} s"
            m = json.loads(self.ws.recv())
            if m.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            t = m["header"]["msg_type"]
            if t in ("stream", "display_data", "execute_result", "error") and on_first_output:
                on_first_output()
                on_first_output = None
            if t == "stream":
                texts.append(m["content"]["text"])
            elif t == "error":
                err = f"{m['content']['ename']}: {m['content']['evalue']}"
            elif t == "execute_reply":
                replied = True
                if m["content"]["status"] != "ok" and err is None:
                    err = m["content"].get("ename", "error")
            elif t == "status" and m["content"]["execution_state"] == "idle":
                idle = True
        return texts, err

    def close(self):
        try:
            self.ws.close()
            requests.delete(f"{self.base}/api/kernels/{self.id}", headers=self._h(), timeout=30)
        except (OSError, requests.RequestException):
            pass


class Hub:
    def __init__(self, url: str, service_token: str):
        self.url, self.tok = url, service_token

    def api(self, method, path, **kw):
        r = requests.request(
            method, f"{self.url}/hub/api{path}", headers={"Authorization": f"token {self.tok}"}, timeout=180, **kw
        )
        r.raise_for_status()
        return r.json() if r.content else None

    def login(self, user: str, password: str) -> bool:
        """The login form, as a browser submits it (with the _xsrf field JupyterHub requires)."""
        s = requests.Session()
        page = s.get(f"{self.url}/hub/login", timeout=60)
        m = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        data = {"username": user, "password": password, **({"_xsrf": m.group(1)} if m else {})}
        r = s.post(f"{self.url}/hub/login", data=data, allow_redirects=False, timeout=60)
        return r.status_code == 302 and any(
            c.name.startswith("jupyterhub-session") or c.name == "jupyterhub-hub-login" for c in s.cookies
        )

    def start_server(self, user: str, timeout: float = 600) -> None:
        self.api("POST", f"/users/{user}/server")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            u = self.api("GET", f"/users/{user}")
            srv = u.get("servers", {}).get("")
            if srv and srv.get("ready"):
                return
            time.sleep(0.5)
        raise TimeoutError(f"{user}: server not ready within {timeout} s")

    def user_token(self, user: str) -> str:
        return self.api("POST", f"/users/{user}/tokens", json={"note": "hub_load", "expires_in": 7200})["token"]


def student_run(hub: Hub, user: str, password: str, notebooks, res: dict, start_evt: threading.Event):
    start_evt.wait()
    t0 = time.monotonic()
    res.update(user=user, errors=[])
    kernel = None
    try:
        res["login"] = hub.login(user, password)
        hub.start_server(user)
        res["server_s"] = round(time.monotonic() - t0, 2)
        token = hub.user_token(user)
        kernel = Kernel(f"{hub.url}/user/{user}", token)
        out, err = kernel.execute(PROBE_FIRST)
        if err:
            res["errors"].append(f"probe: {err}")
        res["cache_dir"] = "".join(out).split()[-1] if out else None
        out, _ = kernel.execute(
            "import os as _o; _c = _o.path.expanduser('~/quantlab-notebooks/00_start_here.ipynb')\n"
            "print(_o.path.isfile(_c) and _o.stat(_c).st_uid == _o.getuid())"
        )
        res["course_copied"] = "".join(out).strip() == "True"  # the hub's pre_spawn_hook, owned by the student
        res["notebooks"] = {}
        first = {}
        for name, codes in notebooks:
            tn = time.monotonic()
            for i, code in enumerate(codes):
                # time to first output: from the first cell's request to the first output the student sees
                # (notebook 00's first cell only imports; its second prints)
                first.setdefault("t", time.monotonic())
                out, err = kernel.execute(
                    code,
                    on_first_output=None if "out" in first else (lambda: first.setdefault("out", time.monotonic())),
                )
                res.setdefault("outputs", []).append("".join(out)[-200:])
                if err:
                    res["errors"].append(f"{name} cell {i}: {err}")
                    break
            res["notebooks"][name] = round(time.monotonic() - tn, 1)
        res["first_output_s"] = round(first["out"] - first["t"], 2) if "out" in first else None
        out, err = kernel.execute(PROBE_LAST)
        probe = json.loads("".join(out).split("PROBE ", 1)[1]) if out and not err else {}
        res.update(
            compiles=probe.get("compiles"),
            compiled=probe.get("compiled"),
            cache_hits=probe.get("cache_hits"),
            kernel_maxrss_mb=round(probe.get("maxrss_mb", 0)),
            kernel_cpu_s=round(probe.get("cpu_s", 0), 1),
        )
    except Exception as e:  # noqa: BLE001 (recorded per student; the run goes on for the others)
        res["errors"].append(f"{type(e).__name__}: {e}")
    finally:
        res["total_s"] = round(time.monotonic() - t0, 1)
        if kernel:
            kernel.close()


class MemorySampler(threading.Thread):
    """Once a second: RSS and PSS summed over each watched uid's processes; the peaks, and the machine's
    used memory."""

    def __init__(self, uids: dict[int, str]):
        super().__init__(daemon=True)
        self.uids, self.stop = uids, threading.Event()
        self.peak = {u: {"rss": 0, "pss": 0, "procs": 0} for u in uids.values()}
        self.base_used = psutil.virtual_memory().used
        self.peak_used = self.base_used
        self.peak_total_pss = 0

    def run(self):
        while not self.stop.is_set():
            now = {u: {"rss": 0, "pss": 0, "procs": 0} for u in self.uids.values()}
            for p in psutil.process_iter(["uids"]):
                try:
                    who = self.uids.get(p.info["uids"].real)
                    if who is None:
                        continue
                    mi = p.memory_full_info()
                    now[who]["rss"] += mi.rss
                    now[who]["pss"] += mi.pss
                    now[who]["procs"] += 1
                except (psutil.Error, AttributeError):
                    continue
            for who, v in now.items():
                for k in v:
                    self.peak[who][k] = max(self.peak[who][k], v[k])
            self.peak_total_pss = max(self.peak_total_pss, sum(v["pss"] for v in now.values()))
            self.peak_used = max(self.peak_used, psutil.virtual_memory().used)
            self.stop.wait(1.0)


def warm_shared_cache(python: str, cache: pathlib.Path, log) -> float:
    if (cache / ".quantlab-warm").is_file():
        return 0.0
    t = time.monotonic()
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    # cwd: not the checkout — `python -m` puts the cwd first on sys.path, and a warm-up of the checkout's
    # quantlab fills numba's cache for *its* source files, which the students' (installed) quantlab never hits
    subprocess.run(
        [python, "-m", "quantlab.warmup", "--jobs", str(os.cpu_count() or 2)],
        env=env,
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=cache.parent,
    )
    return time.monotonic() - t


def run(
    students: int,
    cells: list[tuple[str, list[str]]],
    cache: pathlib.Path,
    prefix: str = "qlstudent",
    keep_users: bool = False,
    workdir: pathlib.Path | None = None,
    python: str = sys.executable,
    pythonpath: str | None = None,
) -> dict:
    """The measurement; ``cells``: (notebook name, code cells) in the order every student runs them;
    ``python``: the hub's environment (quantlab, JupyterHub, the models installed; readable by the students);
    ``pythonpath``: a quantlab checkout the students' kernels import instead of the installed one."""
    if os.geteuid() != 0:
        raise SystemExit("hub_load: run as root (the hub starts each student's server as that student)")
    why = student_cannot_start(python)
    if why:
        raise SystemExit(f"hub_load: {why} (deploy/jupyterhub/README.md)")
    work = workdir or pathlib.Path(tempfile.mkdtemp(prefix="quantlab-hub-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    log = open(work / "hub.log", "w")  # noqa: SIM115 (the hub writes it until the end)
    list_file = work / "students.txt"
    env_users = dict(os.environ, QUANTLAB_HUB_STUDENTS=str(list_file))
    subprocess.run(
        ["bash", str(DEPLOY / "add_students.sh"), str(students), prefix], env=env_users, check=True, capture_output=True
    )
    users = list_file.read_text().split()[:students]
    uids = {pwd.getpwnam(u).pw_uid: u for u in users}
    summary: dict = {
        "students": students,
        "notebooks": [n for n, _ in cells],
        "cores": os.cpu_count(),
        "load_before": os.getloadavg(),
    }
    summary["python"] = python
    summary["warmup_s"] = round(warm_shared_cache(python, cache, log), 1)
    subprocess.run(["chmod", "-R", "a+rX,go-w", str(cache)], check=True)
    port = _free_port()
    password = secrets.token_urlsafe(12)
    service_token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(
        QUANTLAB_HUB_PASSWORD=password,
        QUANTLAB_HUB_SERVICE_TOKEN=service_token,
        QUANTLAB_HUB_STUDENTS=str(list_file),
        QUANTLAB_HUB_IP="127.0.0.1",
        QUANTLAB_HUB_PORT=str(port),
        QUANTLAB_HUB_API_PORT=str(_free_port()),
        QUANTLAB_HUB_PROXY_API_PORT=str(_free_port()),
        QUANTLAB_HUB_DIR=str(work / "state"),
        QUANTLAB_SHARED_NUMBA_CACHE=str(cache),
        QUANTLAB_HUB_PROXY=proxy_command() or "configurable-http-proxy",
    )
    env.pop("PYTHONPATH", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    hub_proc = subprocess.Popen(
        [python, "-m", "jupyterhub", "-f", str(DEPLOY / "jupyterhub_config.py")],
        env=env,
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    hub = Hub(url, service_token)
    results = [dict() for _ in users]
    sampler = None
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{url}/hub/api", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if hub_proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"hub did not start; see {work / 'hub.log'}")
            time.sleep(0.5)
        sampler = MemorySampler(uids)
        sampler.start()
        go = threading.Event()
        threads = [
            threading.Thread(target=student_run, args=(hub, u, password, cells, r, go)) for u, r in zip(users, results)
        ]
        for t in threads:
            t.start()
        t_all = time.monotonic()
        go.set()
        for t in threads:
            t.join()
        summary["wall_s"] = round(time.monotonic() - t_all, 1)
        summary["load_after"] = os.getloadavg()
    finally:
        if sampler:
            sampler.stop.set()
            sampler.join()
        for u in users:
            try:
                hub.api("DELETE", f"/users/{u}/server")
            except requests.RequestException:
                pass
        os.killpg(hub_proc.pid, signal.SIGTERM)
        try:
            hub_proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(hub_proc.pid, signal.SIGKILL)
        for u in users:  # a server the hub did not stop
            subprocess.run(["pkill", "-KILL", "-u", u], capture_output=True)
        if not keep_users:
            subprocess.run(
                ["bash", str(DEPLOY / "add_students.sh"), "--remove", prefix], env=env_users, capture_output=True
            )
        log.close()
    mb = 1 << 20
    for r in results:
        p = sampler.peak[r["user"]]
        r.update(peak_rss_mb=round(p["rss"] / mb), peak_pss_mb=round(p["pss"] / mb), processes=p["procs"])
    summary["per_student"] = results
    summary["peak_used_over_baseline_mb"] = round((sampler.peak_used - sampler.base_used) / mb)
    summary["peak_total_pss_mb"] = round(sampler.peak_total_pss / mb)
    summary["ok"] = all(r.get("login") and not r["errors"] and r.get("compiles") == 0 for r in results)
    summary["hub_log"] = str(work / "hub.log")
    return summary


def table(summary: dict) -> str:
    rows = [
        "| student | login | server up (s) | first output (s) | "
        + " | ".join(f"{n} (s)" for n in summary["notebooks"])
        + " | kernel CPU (s) | peak RSS (MB) | peak PSS (MB) | kernels loaded | compiles | errors |",
        "|---" * (10 + len(summary["notebooks"])) + "|",
    ]
    for r in summary["per_student"]:
        nbs = r.get("notebooks", {})
        rows.append(
            f"| {r['user']} | {'yes' if r.get('login') else 'NO'} | {r.get('server_s')} | "
            f"{r.get('first_output_s')} | "
            + " | ".join(str(v) for v in nbs.values())
            + " | " * max(0, len(summary["notebooks"]) - len(nbs))
            + f" | {r.get('kernel_cpu_s')} | {r.get('peak_rss_mb')} | {r.get('peak_pss_mb')} | {r.get('cache_hits')} | "
            f"{r.get('compiles')} | "
            f"{'; '.join(r['errors'])[:120] or '-'} |"
        )
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--students", type=int, default=10)
    ap.add_argument("--notebooks", default="00,01,02,03", help="comma-separated notebook numbers")
    ap.add_argument("--cache", default="/srv/quantlab/numba", help="the shared numba cache (warmed if needed)")
    ap.add_argument("--prefix", default="qlstudent", help="account name prefix")
    ap.add_argument("--keep-users", action="store_true")
    ap.add_argument(
        "--python",
        default=sys.executable,
        help="the hub environment's python (quantlab[hub] and the models installed in it; students must "
        "be able to run it); default: this one",
    )
    ap.add_argument(
        "--pythonpath",
        default=None,
        help="a quantlab checkout for the students' kernels (default: the installed quantlab)",
    )
    ap.add_argument("--json", default=None, help="write the summary here")
    args = ap.parse_args(argv)
    s = run(
        args.students,
        notebook_cells(args.notebooks.split(",")),
        pathlib.Path(args.cache),
        args.prefix,
        args.keep_users,
        python=args.python,
        pythonpath=args.pythonpath,
    )
    print(table(s))
    print(json.dumps({k: v for k, v in s.items() if k != "per_student"}, indent=1))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(s, indent=1))
    return 0 if s["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
