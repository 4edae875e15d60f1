"""JupyterHub for a quantlab workshop on one machine (see docs/workshop-server.md).

    sudo deploy/jupyterhub/add_students.sh 30            # accounts student01..student30 (once)
    sudo QUANTLAB_HUB_PASSWORD=... deploy/jupyterhub/start.sh

Design (decided for a class on one machine, run for a day by an instructor):

* **Authenticator: SharedPasswordAuthenticator** (JupyterHub >= 5.3, built in): one class password written
  on the board, nothing to administer, no sign-up queue. Only the pre-created accounts may log in
  (``allowed_users``); the instructor logs in as admin with a separate long password. It protects the hub
  from outsiders, not students from each other (anyone with the password can log in as any student) —
  fine for a workshop, not for graded work: there use an OAuth authenticator (GitHub, your LMS).
* **Spawner: LocalProcessSpawner**: each student's server and kernels run as that student's own Unix
  account (uid), so students cannot read, write or kill each other's files and processes, and cannot
  write the shared kernel cache. (SimpleLocalProcessSpawner would run everyone as one uid: no such walls.)
  The hub itself runs as root to switch to the students' uids.
* **Kernels warm for everyone**: numba's compiled kernels are warmed once into a root-owned, read-only
  directory (``QUANTLAB_SHARED_NUMBA_CACHE``, default /srv/quantlab/numba; ``start.sh`` warms it). numba
  ignores a cache directory it cannot write, so quantlab links the shared files into each student's own
  ``~/.cache/quantlab/numba`` (quantlab/_cache.py): no student compiles anything.
* **Models shared**: the model packages are installed once in the hub's environment; every kernel maps
  the same files (quantlab's GGUF reader uses mmap), so their pages are in RAM once.
* **Workshop mode**: ``QUANTLAB_QUICK=1`` for every student (notebooks 07 and 10 take seconds, not minutes).
* **Threads**: ``NUMBA_NUM_THREADS`` (default 1 per student; BLAS too): 30 students on a few cores should
  not each start one thread per core.
* **Memory/CPU**: LocalProcessSpawner does not enforce ``mem_limit``/``cpu_limit`` (it only passes them as
  MEM_LIMIT/CPU_LIMIT to the server); size the machine from docs/workshop-server.md (measured per student).

Settings come from the environment (start.sh sets the defaults):
QUANTLAB_HUB_PASSWORD (required, >= 8 characters), QUANTLAB_HUB_ADMIN / QUANTLAB_HUB_ADMIN_PASSWORD
(optional, >= 32 characters), QUANTLAB_HUB_STUDENTS (file with one account name a line, default
/srv/quantlab/students.txt), QUANTLAB_HUB_IP / QUANTLAB_HUB_PORT (0.0.0.0:8000), QUANTLAB_HUB_DIR (the hub's
database and cookie secret, /srv/quantlab/hub), QUANTLAB_NOTEBOOKS (the course copied into a student's home on
first start), QUANTLAB_SHARED_NUMBA_CACHE, QUANTLAB_HUB_THREADS, QUANTLAB_HUB_QUICK (1),
QUANTLAB_HUB_SERVICE_TOKEN (optional: an API token for automation, e.g. tools/hub_load.py).
"""

import os
import pathlib
import pwd
import shutil
import sys

c = get_config()  # noqa: F821 (JupyterHub's config loader provides it)

env = os.environ.get
here = pathlib.Path(__file__).resolve().parent
state = pathlib.Path(env("QUANTLAB_HUB_DIR", "/srv/quantlab/hub"))
state.mkdir(parents=True, exist_ok=True)

# --- network and state
c.JupyterHub.ip = env("QUANTLAB_HUB_IP", "0.0.0.0")
c.JupyterHub.port = int(env("QUANTLAB_HUB_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(env("QUANTLAB_HUB_API_PORT", "8081"))
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{env('QUANTLAB_HUB_PROXY_API_PORT', '8001')}"
c.ConfigurableHTTPProxy.command = [
    env("QUANTLAB_HUB_PROXY", shutil.which("configurable-http-proxy") or "configurable-http-proxy")
]
c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(state / "jupyterhub.pid")

# --- who may log in
c.JupyterHub.authenticator_class = "shared-password"
c.SharedPasswordAuthenticator.user_password = env("QUANTLAB_HUB_PASSWORD")
students_file = pathlib.Path(env("QUANTLAB_HUB_STUDENTS", "/srv/quantlab/students.txt"))
students = set(students_file.read_text().split()) if students_file.is_file() else set()
if not students:
    sys.exit(
        f"jupyterhub_config: no student accounts in {students_file} (deploy/jupyterhub/add_students.sh makes them)"
    )
c.Authenticator.allowed_users = students
admin = env("QUANTLAB_HUB_ADMIN")
if admin:
    c.Authenticator.admin_users = {admin}
    c.SharedPasswordAuthenticator.admin_password = env("QUANTLAB_HUB_ADMIN_PASSWORD")

token = env("QUANTLAB_HUB_SERVICE_TOKEN")
if token:  # automation (tools/hub_load.py): start/stop servers, make tokens, reach the servers
    c.JupyterHub.services = [{"name": "quantlab-automation", "api_token": token}]
    c.JupyterHub.load_roles = [
        {
            "name": "quantlab-automation",
            "services": ["quantlab-automation"],
            "scopes": ["admin:users", "admin:servers", "tokens", "access:servers"],
        }
    ]

# --- the students' servers
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [str(pathlib.Path(sys.executable).with_name("jupyterhub-singleuser"))]
c.Spawner.default_url = "/lab/tree/quantlab-notebooks/00_start_here.ipynb"
c.Spawner.notebook_dir = "~"
c.Spawner.start_timeout = 180  # a loaded machine starts 30 servers slowly
c.Spawner.http_timeout = 180
threads = env("QUANTLAB_HUB_THREADS", "1")
c.Spawner.environment = {
    "QUANTLAB_QUICK": env("QUANTLAB_HUB_QUICK", "1"),  # the workshop mode
    "QUANTLAB_SHARED_NUMBA_CACHE": env("QUANTLAB_SHARED_NUMBA_CACHE", "/srv/quantlab/numba"),
    "NUMBA_NUM_THREADS": threads,
    "OMP_NUM_THREADS": threads,
    "OPENBLAS_NUM_THREADS": threads,
    "MKL_NUM_THREADS": threads,
}
# PATH, PYTHONPATH, VIRTUAL_ENV, LANG... pass from the hub (JupyterHub's env_keep); HOME is the student's, so
# each student's numba cache is quantlab's per-user default (~/.cache/quantlab/numba), linked to the shared one.
c.Spawner.mem_limit = env("QUANTLAB_HUB_MEM_LIMIT", "2G")  # advisory with LocalProcessSpawner (see above)

notebooks = pathlib.Path(env("QUANTLAB_NOTEBOOKS", here.parent.parent / "notebooks"))


def copy_course(spawner):
    """First start of a student: a copy of the course in ~/quantlab-notebooks, owned by the student."""
    pw = pwd.getpwnam(spawner.user.name)
    dest = pathlib.Path(pw.pw_dir) / "quantlab-notebooks"
    if dest.exists() or not notebooks.is_dir():
        return
    shutil.copytree(notebooks, dest, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    for p in [dest, *dest.rglob("*")]:
        os.chown(p, pw.pw_uid, pw.pw_gid)


c.Spawner.pre_spawn_hook = copy_course
