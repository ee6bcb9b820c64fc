#!/usr/bin/env python3
"""deploy_test.py - the files in deploy/ that run smolmq for real: the
systemd units, the compose files and the Kubernetes manifests.

Each file is run as what it describes: `make install` into a scratch PREFIX
gives the layout the units and the container image have (PREFIX/bin,
PREFIX/share/smolmq), the command lines are read from the files, their
hosts' names (`broker`, `smolmq-broker`) point at 127.0.0.1 and their ports
are remapped to free ones, and a chat goes through the gateway they start;
then SIGTERM stops each process, which must exit 0. The files are also
checked against each other and against the programs: every flag is one the
program's --help lists, every endpoint names a service and port that exist,
every stop grace period outlasts the drain, the image's user is the one the
manifests run as. With kubectl present the Kubernetes overlays are rendered
by its kustomize; with systemd-analyze the units are verified by systemd's
own parser.

Two tests run them for real and need a Docker daemon that can fetch
debian:12 and Debian's packages, so they run only with SMQ_TEST_DOCKER=1
(some minutes; SMQ_DOCKER_BUILD_ARGS adds arguments to the image's `docker
build`): test_image_in_docker builds the image and runs compose.yaml;
test_units_under_systemd_in_docker runs the units under systemd as PID 1 of
a container. Prints PASS/FAIL/SKIP lines.
"""
import base64
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import yaml

from nettest import Skip, check, free_port, run_tests

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BUILD = os.environ.get("SMQ_BUILD", "build")
DEPLOY = os.path.join(ROOT, "deploy")
TMP = tempfile.mkdtemp(prefix="smolmq-deploy-")
PREFIX = os.path.join(TMP, "usr")
IMAGE_PREFIX = "/usr/local"  # where the image installs (deploy/Dockerfile)
DEFAULT_DRAIN_MS = 10000  # each program's --drain-ms default
PROGRAMS = ("smolmq", "smolmq-broker", "smolmq-worker", "smolmq-gateway")

_installed = []


def install():
    """`make install PREFIX=TMP/usr`, once."""
    if not _installed:
        p = subprocess.run(["make", "-s", "--no-print-directory", "-C", ROOT, "install", f"PREFIX={PREFIX}",
                            f"BUILD={BUILD}", "DEPS_DONE=1"], capture_output=True, text=True)
        check(p.returncode == 0, f"make install failed: {p.stdout[-500:]}{p.stderr[-1500:]}")
        _installed.append(True)
    return PREFIX


_flags = {}


def flags_of(program):
    """The flags `program --help` lists."""
    if program not in _flags:
        p = subprocess.run([os.path.join(install(), "bin", program), "--help"], capture_output=True, text=True)
        _flags[program] = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", p.stdout + p.stderr))
        check(_flags[program], f"{program} --help listed no flags")
    return _flags[program]


def check_argv(where, argv):
    """argv's program is one of ours and each of its flags one it has."""
    prog = os.path.basename(argv[0])
    check(prog in PROGRAMS, f"{where}: runs {argv[0]!r}, not one of {PROGRAMS}")
    for a in argv[1:]:
        if a.startswith("--"):
            check(a in flags_of(prog), f"{where}: {prog} has no flag {a} (its --help lists {sorted(flags_of(prog))})")


def flag_value(argv, flag, default=None):
    for i, a in enumerate(argv[:-1]):
        if a == flag:
            return argv[i + 1]
    return default


def check_grace(where, seconds, argv):
    """A stop's grace period outlasts the program's drain."""
    drain = int(flag_value(argv, "--drain-ms", DEFAULT_DRAIN_MS))
    check(seconds * 1000 >= drain + 5000, f"{where}: {seconds} s to stop, but the drain may take {drain} ms")


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


class Running:
    """Processes started from deployment files' command lines on loopback;
    every one is killed at the end, whatever happened."""

    def __init__(self, what):
        self.what = what
        self.procs, self.logs, self.envs = [], [], []
        self.sockets, self.notes = {}, {}

    def start(self, name, argv, env=None, notify_every_us=0):
        """notify_every_us: as systemd runs a unit of Type=notify with that
        WatchdogSec=, a socket in $NOTIFY_SOCKET (notices() reads it)."""
        argv = [os.path.join(PREFIX, "bin", argv[0]) if "/" not in argv[0] else argv[0], *argv[1:]]
        log = open(os.path.join(TMP, f"{self.what}-{name}.log"), "w+")
        e = {k: v for k, v in os.environ.items() if not k.startswith("SMQ_") and k not in ("NOTIFY_SOCKET",
                                                                                            "WATCHDOG_USEC")}
        e.update(env or {})
        if notify_every_us:
            path = os.path.join(TMP, f"notify-{self.what}-{len(self.procs)}")
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(path)
            sock.setblocking(False)
            self.sockets[name] = sock
            e.update(NOTIFY_SOCKET=path, WATCHDOG_USEC=str(notify_every_us))
        self.envs.append(env or {})
        self.procs.append((name, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=e)))
        self.logs.append((name, log, argv))

    def notices(self, name):
        """What the process has told its $NOTIFY_SOCKET so far, in order."""
        got = self.notes.setdefault(name, [])
        while True:
            try:
                got.append(self.sockets[name].recv(4096).decode())
            except BlockingIOError:
                return got

    def log(self, name):
        (f,) = [f for n, f, _ in self.logs if n == name]
        f.seek(0)
        return f.read()

    def tail(self):
        out = []
        for name, f, argv in self.logs:
            f.seek(0)
            out.append(f"--- {name}: {' '.join(argv)}\n" + "".join(f.readlines()[-15:]))
        return "\n".join(out)

    def chat(self, url, retries=0):
        """Ready within 30 s, then one chat, and the model listed. With
        retries, a 503 is retried after its Retry-After, as a client would."""
        end = time.time() + 30
        while True:
            for name, p in self.procs:
                check(p.poll() is None, f"{self.what}: {name} exited {p.returncode}\n{self.tail()}")
            try:
                if get(url + "/readyz", timeout=1)[0] == 200:
                    break
            except Exception:
                pass
            check(time.time() < end, f"{self.what}: the gateway at {url} was not ready within 30 s\n{self.tail()}")
            time.sleep(0.1)
        req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(
            {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}).encode(),
            headers={"Content-Type": "application/json"})
        while True:
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    answer = json.loads(r.read())
                break
            except urllib.error.HTTPError as e:
                body = e.read()[:300]
                check(e.code == 503 and retries > 0, f"{self.what}: a chat got {e.code}: {body!r}\n{self.tail()}")
                retries -= 1
                time.sleep(float(e.headers.get("Retry-After", "1")))
        check(answer["choices"][0]["finish_reason"] == "length" and answer["usage"]["completion_tokens"] == 4,
              f"{self.what}: {answer}")
        models = json.loads(get(url + "/v1/models")[1])["data"]
        check(len(models) == 1, f"{self.what}: models {models}")
        return models[0]["id"]

    def restart(self, name, sig=signal.SIGKILL):
        """The process `name` killed and started again with the same command."""
        i = [n for n, _ in self.procs].index(name)
        p = self.procs[i][1]
        p.send_signal(sig)
        p.wait(timeout=30)
        log, argv = self.logs[i][1], self.logs[i][2]
        e = {k: v for k, v in os.environ.items() if not k.startswith("SMQ_")}
        e.update(self.envs[i])
        self.procs[i] = (name, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=e))

    def stop(self):
        """SIGTERM, the gateway first and the broker last, as a service
        manager stopping them in dependency order: each exits 0."""
        for name, p in reversed(self.procs):
            p.send_signal(signal.SIGTERM)
            try:
                rc = p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{self.what}: {name} still ran 30 s after SIGTERM\n{self.tail()}")
            check(rc == 0, f"{self.what}: {name} exited {rc} on SIGTERM\n{self.tail()}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for _, p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for sock in self.sockets.values():
            sock.close()


def remap(value, mapping):
    for a, b in mapping.items():
        value = value.replace(a, b)
    return value


# --- systemd ---------------------------------------------------------------

def read_unit(path):
    """A unit file's [Service] settings: (name, value) in order."""
    out, section = [], None
    for line in open(path):
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            k, _, v = line.partition("=")
            out.append((k.strip(), v.strip()))
    return out


def read_env_file(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            env[k.strip()] = v.strip()
    return env


def unit_command(path, instance, env_file):
    """A unit's ExecStart as systemd runs it: specifiers (%i, %H), then
    Environment=, overridden by EnvironmentFile= (env_file stands in for
    the unit's own), then "${VAR}" one word and "$VAR" split on spaces."""
    settings = read_unit(path)
    spec = {"%i": instance, "%H": socket.gethostname(), "%%": "%"}
    env, execs = {}, []
    for k, v in settings:
        v = re.sub(r"%[iH%]", lambda m: spec[m.group(0)], v)
        check(not re.search(r"%[a-zA-Z]", v), f"{path}: a specifier this test does not know in {v!r}")
        if k == "Environment":
            for assignment in v.split():
                name, _, value = assignment.partition("=")
                env[name] = value
        elif k == "EnvironmentFile":
            check(v.lstrip("-") == "/etc/smolmq/smolmq.env", f"{path}: EnvironmentFile={v}")
        elif k == "ExecStart":
            execs.append(v)
    env.update(read_env_file(env_file))
    check(len(execs) == 1, f"{path}: {len(execs)} ExecStart lines")
    argv = []
    for word in execs[0].split():
        m = re.fullmatch(r"\$([A-Za-z_]\w*)", word)
        if m:
            argv += env.get(m.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{(\w+)\}", lambda m: env.get(m.group(1), ""), word))
    return argv, {k: v for k, v in env.items() if k.startswith("SMQ_")}, dict(settings)


UNITS = ("smolmq-broker.service", "smolmq-worker@.service", "smolmq-gateway.service")


def test_units_run():
    """The installed units' command lines, given a settings file that puts the
    broker and gateway on free ports: a chat through them; SIGTERM stops each
    within its TimeoutStopSec."""
    units = os.path.join(install(), "lib", "systemd", "system")
    cport, wport, hport = free_port(), free_port(), free_port()
    env_file = os.path.join(TMP, "smolmq.env")
    with open(env_file, "w") as f:
        f.write(f"# the broker's endpoints, and where the others find it\n"
                f"SMQ_BROKER_CLIENTS=tcp://127.0.0.1:{cport}\nSMQ_BROKER_WORKERS=tcp://127.0.0.1:{wport}\n"
                f"SMQ_BROKER=tcp://127.0.0.1:{cport}\nSMQ_WORKER_ARGS=--threads 1 --capacity 2\n"
                f"SMQ_GATEWAY_ARGS=--listen 127.0.0.1:{hport}\n")
    with Running("systemd") as run:
        for unit in UNITS:
            argv, env, settings = unit_command(os.path.join(units, unit), "0", env_file)
            check_argv(unit, argv)
            check(argv[0] == os.path.join(PREFIX, "bin", unit.split("@")[0].split(".")[0]),
                  f"{unit}: ExecStart runs {argv[0]} (install rewrites /usr/local to PREFIX)")
            check_grace(unit, int(settings.get("TimeoutStopSec", "90")), argv)
            check(settings.get("Type") == "notify" and re.fullmatch(r"\d+s", settings.get("WatchdogSec", "")),
                  f"{unit}: Type={settings.get('Type')} WatchdogSec={settings.get('WatchdogSec')}")
            # As systemd runs it, with a watchdog of 0.4 s instead of its own.
            run.start(unit, argv, env, notify_every_us=400000)
        model = run.chat(f"http://127.0.0.1:{hport}")
        check(model == "smolmq-tiny", f"the units serve {model}, not the built-in model")
        time.sleep(0.5)
        for unit in UNITS:
            got = run.notices(unit)
            check(got[:1] == ["READY=1"] and "WATCHDOG=1" in got, f"{unit} told systemd {got}")
        run.stop()
        for unit in UNITS:
            got = run.notices(unit)
            check("STOPPING=1" in got, f"{unit} did not say STOPPING=1 on SIGTERM: {got}")


def test_units_verify():
    """systemd-analyze verify: systemd's own parser finds nothing to say of
    the installed units (a worker instance stands for the template)."""
    if not shutil.which("systemd-analyze"):
        raise Skip("no systemd-analyze")
    units = os.path.join(install(), "lib", "systemd", "system")
    d = os.path.join(TMP, "verify")
    os.makedirs(d, exist_ok=True)
    paths = []
    for unit in UNITS:
        dst = os.path.join(d, unit.replace("@.", "@0."))
        shutil.copy(os.path.join(units, unit), dst)
        paths.append(dst)
    p = subprocess.run(["systemd-analyze", "verify", "--man=no", *paths], capture_output=True, text=True)
    check(p.returncode == 0 and not p.stderr.strip() and not p.stdout.strip(),
          f"systemd-analyze verify: rc {p.returncode}\n{p.stdout}{p.stderr}")


def test_units_settings_example():
    """deploy/systemd/smolmq.env: every variable it shows is one a unit or a
    program reads, and every flag in its *_ARGS examples is the program's."""
    units = os.path.join(DEPLOY, "systemd")
    text = " ".join(open(os.path.join(units, u)).read() for u in UNITS)
    read_by_programs = {"SMQ_BROKER_CLIENTS", "SMQ_BROKER_WORKERS", "SMQ_BROKER"}
    seen = 0
    for line in open(os.path.join(units, "smolmq.env")):
        m = re.match(r"#?(SMQ_\w+)=(.*)", line.strip())
        if not m:
            continue
        seen += 1
        name, value = m.groups()
        check(name in read_by_programs or f"${name}" in text or "${" + name + "}" in text,
              f"smolmq.env: {name} is read by no unit or program")
        prog = {"SMQ_BROKER_ARGS": "smolmq-broker", "SMQ_WORKER_ARGS": "smolmq-worker",
                "SMQ_GATEWAY_ARGS": "smolmq-gateway"}.get(name)
        if prog:
            check_argv(f"smolmq.env {name}", [prog, *value.split()])
    check(seen >= 6, f"smolmq.env shows {seen} settings")


# --- containers ------------------------------------------------------------

def dockerfile_uid():
    text = open(os.path.join(DEPLOY, "Dockerfile")).read()
    uid = re.search(r"useradd [^\n]*--uid (\d+)", text)
    user = re.search(r"^USER (\d+)$", text, re.M)
    check(uid and user and uid.group(1) == user.group(1), "Dockerfile: USER is not the numeric uid it creates")
    return int(uid.group(1))


def interpolate(value, env):
    """compose's ${VAR:-default} and ${VAR}, and $$ for a $."""
    return re.sub(r"\$\$|\$\{(\w+)(?::-([^}]*))?\}",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1)) or (m.group(2) or ""), value)


def load_compose(name, env):
    def walk(x):
        if isinstance(x, str):
            return interpolate(x, env)
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items()}
        return x
    return walk(yaml.safe_load(open(os.path.join(DEPLOY, name))))


def parse_seconds(s):
    m = re.fullmatch(r"(\d+)s", str(s))
    check(m, f"a duration compose reads as seconds: {s!r}")
    return int(m.group(1))


def endpoint_targets(argv):
    """The tcp://HOST:PORT endpoints an argv connects to."""
    return re.findall(r"tcp://([\w.-]+):(\d+)", " ".join(argv))


def check_compose(files, env):
    """compose files merged the way compose merges services (later files
    replace a service's keys): each service checked; returns them."""
    services = {}
    for name in files:
        doc = load_compose(name, env)
        for s, spec in doc["services"].items():
            services[s] = {**services.get(s, {}), **spec}
    check({"broker", "worker", "gateway"} <= set(services), f"{files}: services {sorted(services)}")
    for s, spec in services.items():
        argv = spec["command"]
        where = f"{files} {s}"
        check_argv(where, argv)
        check_grace(where, parse_seconds(spec.get("stop_grace_period", "10s")), argv)
        for d in spec.get("depends_on", []):
            check(d in services, f"{where}: depends on {d}, no such service")
        for host, port in endpoint_targets(argv):
            check(host == "broker", f"{where}: connects to {host}, not the broker service")
            want = {"smolmq-worker": "5556", "smolmq-gateway": "5555"}[argv[0]]
            check(port == want, f"{where}: the broker's port for {argv[0]} is {want}, not {port}")
    for s, spec in services.items():
        alive = flag_value(spec["command"], "--alive-file")
        if alive:  # a worker: its health check reads that file
            test = " ".join(spec.get("healthcheck", {}).get("test", []))
            check(alive in test, f"{files} {s}: the health check {test!r} does not read {alive}")
    gw = services["gateway"]
    listen = flag_value(gw["command"], "--listen")
    check(listen and listen.startswith("*:"), f"gateway listens on {listen}: not reachable from outside its container")
    port = listen.split(":")[1]
    check(any(str(p).endswith(":" + port) for p in gw.get("ports", [])), f"gateway: port {port} is not published")
    check(any(f":{port}/healthz" in a for a in gw["healthcheck"]["test"]), "gateway: its health check's port")
    return services


def test_compose_runs():
    """compose.yaml's services as their containers would run them (the image
    installs with PREFIX=/usr/local, here PREFIX is the scratch one): a chat,
    and each exits 0 on SIGTERM within stop_grace_period. compose.gpu.yaml's
    worker is checked, not run (no GPU here)."""
    install()
    services = check_compose(["compose.yaml"], {})
    gpu = check_compose(["compose.yaml", "compose.gpu.yaml"], {})
    check(flag_value(gpu["worker"]["command"], "--backend") == "cuda", "compose.gpu.yaml: the worker is not on CUDA")
    devices = gpu["worker"]["deploy"]["resources"]["reservations"]["devices"]
    check(len(devices) == 1 and devices[0]["device_ids"] == ["0"], f"compose.gpu.yaml: one GPU per worker: {devices}")
    # A named model: MODELS is mounted at /models.
    named = check_compose(["compose.yaml"], {"MODELS": "/srv/m", "SMQ_MODEL": "/models/x.gguf"})
    check(named["worker"]["volumes"] == ["/srv/m:/models:ro"] and "/models/x.gguf" in named["worker"]["command"],
          f"compose.yaml with MODELS: {named['worker']}")
    cport, wport, hport = free_port(), free_port(), free_port()
    home = os.path.join(TMP, "compose-home")  # the image's /var/lib/smolmq
    os.makedirs(home, exist_ok=True)
    mapping = {"tcp://broker:5555": f"tcp://127.0.0.1:{cport}", "tcp://broker:5556": f"tcp://127.0.0.1:{wport}",
               "*:8080": f"127.0.0.1:{hport}", IMAGE_PREFIX + "/": PREFIX + "/", "/var/lib/smolmq/": home + "/"}
    with Running("compose") as run:
        for s in ("broker", "worker", "gateway"):
            argv = [remap(a, mapping) for a in services[s]["command"]]
            # The broker binds its defaults (*:5555, *:5556) in its container;
            # here, free ports.
            env = {"SMQ_BROKER_CLIENTS": f"tcp://127.0.0.1:{cport}",
                   "SMQ_BROKER_WORKERS": f"tcp://127.0.0.1:{wport}"} if s == "broker" else {}
            if s == "worker":
                argv += ["--threads", "1"]
            run.start(s, argv, env)
        check(run.chat(f"http://127.0.0.1:{hport}") == "smolmq-tiny", "compose serves another model")
        for s in ("worker", "gateway"):
            test = [remap(a, mapping) for a in services[s]["healthcheck"]["test"][1:]]
            if s == "gateway":
                test = [remap(a, {":8080/": f":{hport}/"}) for a in test]
            p = subprocess.run(test, capture_output=True, text=True)
            check(p.returncode == 0, f"compose {s}'s health check fails while it serves: {test} {p.stderr}")
        run.stop()


def kustomize(folder):
    """The manifests of a kustomization (a folder of deploy/k8s, or a path):
    rendered by kubectl's kustomize, or, without kubectl, the base's files as
    they are (no overlays)."""
    path = os.path.join(DEPLOY, "k8s", folder)
    if shutil.which("kubectl"):
        p = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True)
        check(p.returncode == 0, f"kubectl kustomize {folder}: {p.stderr[-1000:]}")
        return [d for d in yaml.safe_load_all(p.stdout) if d]
    if folder != "base":
        raise Skip("no kubectl to render the overlay")
    k = yaml.safe_load(open(os.path.join(path, "kustomization.yaml")))
    return [d for r in k["resources"] for d in yaml.safe_load_all(open(os.path.join(path, r))) if d]


def check_k8s(docs):
    """Services select pods that exist and name ports they have; endpoints
    name Services and their ports; probes name ports; pods run as the
    image's user and stop after their drain. Returns the Deployments'
    containers by name."""
    deps = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    svcs = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    secrets = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "Secret"}
    pvcs = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
    check(set(deps) == {"smolmq-broker", "smolmq-worker", "smolmq-gateway"}, f"Deployments {sorted(deps)}")
    uid = dockerfile_uid()
    out = {}
    for name, d in deps.items():
        spec = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        check(d["spec"]["selector"]["matchLabels"].items() <= labels.items(), f"{name}: selector vs pod labels")
        check(spec["securityContext"]["runAsUser"] == uid, f"{name}: runs as {spec['securityContext']['runAsUser']}, "
              f"the image's user is {uid}")
        (c,) = spec["containers"]
        argv = c["command"] + c.get("args", [])
        check_argv(name, argv)
        check_grace(name, spec.get("terminationGracePeriodSeconds", 30), argv)
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe not in c:
                continue
            if "exec" in c[probe]:
                # It reads the worker's alive file, on a volume of its own.
                alive = flag_value(argv, "--alive-file")
                check(alive and alive in " ".join(c[probe]["exec"]["command"]) and
                      os.path.dirname(alive) in mounts, f"{name}: {probe} {c[probe]} vs --alive-file {alive}")
                continue
            pr = c[probe].get("httpGet") or c[probe].get("tcpSocket")
            check(pr["port"] in ports, f"{name}: {probe} on port {pr['port']}, not one of {ports}")
            if "httpGet" in c[probe]:
                check(pr["path"] in ("/healthz", "/readyz"), f"{name}: {probe} path {pr['path']}")
        ann = d["spec"]["template"]["metadata"].get("annotations", {})
        if "prometheus.io/port" in ann:
            check(int(ann["prometheus.io/port"]) in ports.values() and ann.get("prometheus.io/path") == "/metrics",
                  f"{name}: scraped at {ann}, its ports are {ports}")
        listen = flag_value(argv, "--listen")
        if listen:
            check(listen.startswith("*:") and int(listen.split(":")[1]) in ports.values(),
                  f"{name}: listens on {listen}, declares {ports}")
        for host, port in endpoint_targets(argv):
            check(host in svcs, f"{name}: connects to {host}, no such Service")
            sp = {p["port"]: p["targetPort"] for p in svcs[host]["spec"]["ports"]}
            want = {"smolmq-worker": "workers", "smolmq-gateway": "clients"}[argv[0]]
            check(sp.get(int(port)) == want, f"{name}: port {port} of {host} is {sp.get(int(port))}, not {want}")
        for v in spec.get("volumes", []):
            if "persistentVolumeClaim" in v:
                check(v["persistentVolumeClaim"]["claimName"] in pvcs, f"{name}: claim {v} not in the manifests")
        # Secrets: those named exist with the keys named; a file an argument
        # names under a secret's mount is one of its items.
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        for m in c.get("volumeMounts", []):
            check(m["name"] in vols, f"{name}: mounts {m['name']}, no such volume")
            sv = vols[m["name"]].get("secret")
            if not sv:
                continue
            check(sv["secretName"] in secrets, f"{name}: Secret {sv['secretName']} not in the manifests")
            items = sv.get("items") or [{"key": k, "path": k} for k in secrets[sv["secretName"]]]
            for it in items:
                check(it["key"] in secrets[sv["secretName"]], f"{name}: Secret {sv['secretName']} has no {it['key']}")
            for a in argv:
                if a.startswith(m["mountPath"] + "/"):
                    check(a[len(m["mountPath"]) + 1:] in [it["path"] for it in items],
                          f"{name}: {a} is not one of the files of its Secret's mount")
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                check(ref["key"] in secrets.get(ref["name"], {}), f"{name}: env {e['name']}: no Secret key {ref}")
        names = {e["name"] for e in c.get("env", [])}
        for a in argv:
            for var in re.findall(r"\$\((\w+)\)", a):
                check(var in names, f"{name}: {a} names $({var}), which the container's env does not set")
        out[name] = (argv, c)
    for name, s in svcs.items():
        sel = s["spec"]["selector"]
        target = [n for n, d in deps.items() if sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        check(len(target) == 1, f"Service {name} selects {target}")
        ports = {p["name"] for p in deps[target[0]]["spec"]["template"]["spec"]["containers"][0].get("ports", [])}
        for p in s["spec"]["ports"]:
            check(p["targetPort"] in ports, f"Service {name}: targetPort {p['targetPort']} not in {ports}")
    return out


def check_worker_probes(run, c, mapping):
    """The worker's startup and liveness probes, run here as the kubelet
    would: both pass while it serves; stopped (SIGSTOP: a wedged step) for
    a minute (its alive file's time set back), the liveness probe fails;
    let go, it passes again within two seconds."""
    def probe(which):
        cmd = [remap(a, mapping) for a in c[which]["exec"]["command"]]
        return subprocess.run(cmd, capture_output=True).returncode
    check(probe("startupProbe") == 0 and probe("livenessProbe") == 0, "the worker's probes fail while it serves")
    (p,) = [p for n, p in run.procs if n == "smolmq-worker"]
    alive = remap(flag_value(c["args"], "--alive-file"), mapping)
    p.send_signal(signal.SIGSTOP)
    try:
        t = time.time() - 61
        os.utime(alive, (t, t))
        check(probe("livenessProbe") != 0, "the liveness probe passes for a worker silent for a minute")
    finally:
        p.send_signal(signal.SIGCONT)
    end = time.time() + 2.5
    while probe("livenessProbe") != 0:
        check(time.time() < end, "the liveness probe still fails 2.5 s after the worker went on")
        time.sleep(0.1)


def test_k8s_runs():
    """deploy/k8s/base checked (above) and its containers run with the
    Service's name pointing here: a chat, the broker's pod replaced, a chat
    again, and SIGTERM stops each within its terminationGracePeriodSeconds."""
    install()
    base = check_k8s(kustomize("base"))
    cport, wport, hport = free_port(), free_port(), free_port()
    run_dir = os.path.join(TMP, "k8s-run-smolmq")  # the worker's emptyDir
    os.makedirs(run_dir, exist_ok=True)
    mapping = {"tcp://smolmq-broker:5555": f"tcp://127.0.0.1:{cport}",
               "tcp://smolmq-broker:5556": f"tcp://127.0.0.1:{wport}", "*:8080": f"127.0.0.1:{hport}",
               IMAGE_PREFIX + "/": PREFIX + "/", "/run/smolmq/": run_dir + "/"}
    with Running("k8s") as run:
        for name in ("smolmq-broker", "smolmq-worker", "smolmq-gateway"):
            argv = [remap(a, mapping) for a in base[name][0]]
            env = {"SMQ_BROKER_CLIENTS": f"tcp://127.0.0.1:{cport}",
                   "SMQ_BROKER_WORKERS": f"tcp://127.0.0.1:{wport}"} if name == "smolmq-broker" else {}
            run.start(name, argv, env)
        check(run.chat(f"http://127.0.0.1:{hport}") == "smolmq-tiny", "the manifests serve another model")
        check_worker_probes(run, base["smolmq-worker"][1], mapping)
        # The broker's pod replaced (deploy/README.md): the same gateway and
        # worker serve again, restarted by nobody.
        t0 = time.time()
        run.restart("smolmq-broker")
        run.chat(f"http://127.0.0.1:{hport}", retries=10)
        print(f"    a chat through the same gateway {time.time() - t0:.1f} s after the broker was killed and "
              "started again", flush=True)
        run.stop()


def pod_argv(argv, c, docs):
    """A container's command line as the kubelet makes it: $(VAR) from its
    env (values, or Secrets' keys)."""
    secrets = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "Secret"}
    env = {}
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        env[e["name"]] = base64.b64decode(secrets[ref["name"]][ref["key"]]).decode() if ref else e["value"]
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in argv]


def test_k8s_curve_runs():
    """deploy/k8s/curve on the base, with the Secret its keys.sh prints: the
    pods' command lines (their key files from the Secret, the broker's key
    from its env) run here, a chat goes through over CURVE, and a gateway
    whose key is not on the broker's allow-list gets no answer."""
    if not shutil.which("kubectl"):
        raise Skip("no kubectl to render the component")
    install()
    broker_bin = os.path.join(PREFIX, "bin", "smolmq-broker")
    p = subprocess.run(["sh", os.path.join(DEPLOY, "k8s", "curve", "keys.sh")], capture_output=True, text=True,
                       env={**os.environ, "SMQ_BROKER_BIN": broker_bin})
    check(p.returncode == 0, f"keys.sh: {p.stderr}")
    overlay = os.path.join(TMP, "k8s-curve")
    os.makedirs(overlay, exist_ok=True)
    with open(os.path.join(overlay, "secret.yaml"), "w") as f:
        f.write(p.stdout)
    k8s = os.path.relpath(os.path.join(DEPLOY, "k8s"), overlay)
    with open(os.path.join(overlay, "kustomization.yaml"), "w") as f:
        f.write(f"resources: [{k8s}/base, secret.yaml]\ncomponents: [{k8s}/curve]\n")
    docs = kustomize(overlay)
    pods = check_k8s(docs)
    (secret,) = [d["data"] for d in docs if d["kind"] == "Secret"]
    keys = os.path.join(TMP, "curve-files")
    os.makedirs(keys, exist_ok=True)
    for k, v in secret.items():
        with open(os.path.join(keys, k), "wb") as f:
            f.write(base64.b64decode(v))
    cport, wport, hport, sport = free_port(), free_port(), free_port(), free_port()
    mapping = {"tcp://smolmq-broker:5555": f"tcp://127.0.0.1:{cport}",
               "tcp://smolmq-broker:5556": f"tcp://127.0.0.1:{wport}", "*:8080": f"127.0.0.1:{hport}",
               IMAGE_PREFIX + "/": PREFIX + "/", "/etc/smolmq/curve/": keys + "/",
               "/run/smolmq/": keys + "/"}
    with Running("k8s-curve") as run:
        for name in ("smolmq-broker", "smolmq-worker", "smolmq-gateway"):
            argv, c = pods[name]
            argv = [remap(a, mapping) for a in pod_argv(argv, c, docs)]
            env = {"SMQ_BROKER_CLIENTS": f"tcp://127.0.0.1:{cport}",
                   "SMQ_BROKER_WORKERS": f"tcp://127.0.0.1:{wport}"} if name == "smolmq-broker" else {}
            run.start(name, argv, env)
        check(run.chat(f"http://127.0.0.1:{hport}") == "smolmq-tiny", "no chat over CURVE")
        check("(CURVE)" in run.log("smolmq-broker"), f"the broker does not say CURVE\n{run.tail()}")
        # The same gateway with a key of its own, not on the allow-list.
        stranger = os.path.join(TMP, "stranger.cert")
        subprocess.run([broker_bin, "--keygen", stranger], capture_output=True, check=True)
        argv = [remap(a, {**mapping, keys + "/gateway.cert": stranger, f"127.0.0.1:{hport}": f"127.0.0.1:{sport}"})
                for a in pod_argv(pods["smolmq-gateway"][0], pods["smolmq-gateway"][1], docs)]
        run.start("stranger-gateway", argv)
        time.sleep(1.5)
        try:
            status = get(f"http://127.0.0.1:{sport}/readyz", timeout=5)[0]
        except urllib.error.HTTPError as e:
            status = e.code
        check(status == 503, f"a gateway with a key the broker does not know: /readyz {status}\n{run.tail()}")
        run.stop()


def test_k8s_gpu_overlay():
    """deploy/k8s/gpu, rendered by kubectl's kustomize and checked: workers
    on CUDA, one GPU each, the model on the claimed volume."""
    install()
    gpu = check_k8s(kustomize("gpu"))
    argv, c = gpu["smolmq-worker"]
    check(flag_value(argv, "--backend") == "cuda", f"gpu overlay: worker {argv}")
    check(c["resources"]["limits"].get("nvidia.com/gpu") == 1, f"gpu overlay: {c['resources']}")
    mounts = [m["mountPath"] for m in c.get("volumeMounts", [])]
    check(any(flag_value(argv, "--model").startswith(m + "/") for m in mounts), f"gpu overlay: model not in {mounts}")


def test_image_in_docker():
    """The image built (deploy/Dockerfile) and compose.yaml up for real: a
    chat through the containers, the broker reached from this host by the
    C client, and `down` within the grace periods."""
    if os.environ.get("SMQ_TEST_DOCKER") != "1":
        raise Skip("SMQ_TEST_DOCKER=1 runs it (a Docker daemon that can fetch debian:12 and packages)")
    compose = ["docker", "compose"] if subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                      ).returncode == 0 else ["docker-compose"]
    tag = os.environ.get("SMQ_IMAGE", "smolmq:test")
    # e.g. --build-arg EXTRA_CA_CERT=... behind a TLS-intercepting proxy
    extra = shlex.split(os.environ.get("SMQ_DOCKER_BUILD_ARGS", ""))
    p = subprocess.run(["docker", "build", "-f", "deploy/Dockerfile", "-t", tag, *extra, "."], cwd=ROOT,
                       capture_output=True, text=True)
    check(p.returncode == 0, f"docker build: {p.stdout[-2000:]}{p.stderr[-2000:]}")
    hport = free_port()
    bport = free_port()
    while bport + 1 == hport or not port_free(bport + 1):
        bport = free_port()
    env = {**os.environ, "SMQ_IMAGE": tag, "HTTP": f"127.0.0.1:{hport}",
           "BROKER_PORTS": f"127.0.0.1:{bport}-{bport + 1}"}
    cmd = [*compose, "-f", "deploy/compose.yaml", "-p", f"smolmqtest{os.getpid()}"]
    try:
        p = subprocess.run([*cmd, "up", "-d", "--scale", "worker=2"], cwd=ROOT, env=env, capture_output=True,
                           text=True)
        check(p.returncode == 0, f"compose up: {p.stderr[-2000:]}")
        run = Running("docker")
        try:
            check(run.chat(f"http://127.0.0.1:{hport}") == "smolmq-tiny", "the containers serve another model")
        except AssertionError as e:
            logs = subprocess.run([*cmd, "logs", "--tail", "20"], cwd=ROOT, env=env, capture_output=True, text=True)
            raise AssertionError(f"{e}\n{logs.stdout[-3000:]}")
        # The gateway's health check, and the workers' (their alive files).
        ids = subprocess.run([*cmd, "ps", "-q", "gateway", "worker"], cwd=ROOT, env=env, capture_output=True,
                             text=True).stdout.split()
        if not ids:  # a compose that takes one service name at a time
            ids = subprocess.run([*cmd, "ps", "-q"], cwd=ROOT, env=env, capture_output=True,
                                 text=True).stdout.split()
        end = time.time() + 40
        while True:
            health = subprocess.run(["docker", "inspect", "--format", "{{.Name}} {{if .State.Health}}"
                                     "{{.State.Health.Status}}{{else}}none{{end}}", *ids], capture_output=True,
                                    text=True).stdout.split("\n")
            states = dict(h.split() for h in health if h.strip())
            checked = {n: st for n, st in states.items() if "gateway" in n or "worker" in n}
            if len(checked) >= 3 and all(st == "healthy" for st in checked.values()):
                break
            check(time.time() < end and all(st in ("starting", "healthy") for st in checked.values()),
                  f"health: {states}")
            time.sleep(1)
        ask = subprocess.run([os.path.join(BUILD, "bin", "smolmq"), "ask", "--broker", f"tcp://127.0.0.1:{bport}",
                              "--max-tokens", "3", "hi"], capture_output=True, text=True, timeout=60)
        check(ask.returncode == 0, f"smolmq ask through the published broker port: {ask.stderr[-500:]}")
        t0 = time.time()
        p = subprocess.run([*cmd, "stop"], cwd=ROOT, env=env, capture_output=True, text=True)
        check(p.returncode == 0, f"compose stop: {p.stderr[-1000:]}")
        codes = subprocess.run([*cmd, "ps", "-a"], cwd=ROOT, env=env, capture_output=True, text=True).stdout
        check("Exit 0" in codes or "Exited (0)" in codes, f"containers after stop:\n{codes}")
        check(not re.search(r"Exit(ed \()?[1-9]", codes), f"a container exited non-zero:\n{codes}")
        print(f"    compose stop took {time.time() - t0:.1f} s", flush=True)
        # A model from the host: MODELS mounted, SMQ_MODEL inside it.
        env["MODELS"] = os.path.join(ROOT, "tests", "data", "models")
        env["SMQ_MODEL"] = "/models/smollm3-tiny-q4_k_m.gguf"
        p = subprocess.run([*cmd, "up", "-d"], cwd=ROOT, env=env, capture_output=True, text=True)
        check(p.returncode == 0, f"compose up with MODELS: {p.stderr[-2000:]}")
        check(Running("docker").chat(f"http://127.0.0.1:{hport}", retries=10) == "smollm3-tiny-q4_k_m",
              "the containers do not serve the mounted model")
    finally:
        subprocess.run([*cmd, "down", "-v"], cwd=ROOT, env=env, capture_output=True)


SYSTEMD_IMAGE = """FROM debian:12
COPY deps.sh /tmp/deps.sh
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends systemd systemd-sysv dbus \\
    && sh /tmp/deps.sh --run && rm -rf /var/lib/apt/lists/*
CMD ["/sbin/init"]
"""


def test_units_under_systemd_in_docker():
    """The units under a real systemd (PID 1 of a Debian 12 container, the
    programs installed into it by `make install DESTDIR=`): enabled and
    started as deploy/README.md says (Type=notify: started means READY=1
    came), a chat, then CURVE turned on through smolmq.env exactly as its
    example shows (key files root:smolmq 0640), a chat again, a wedged
    worker killed and restarted by the watchdog and serving again, and
    `systemctl stop` ending each with success."""
    if os.environ.get("SMQ_TEST_DOCKER") != "1":
        raise Skip("SMQ_TEST_DOCKER=1 runs it (a Docker daemon that can fetch debian:12 and packages)")
    ctx = os.path.join(TMP, "systemd-image")
    os.makedirs(ctx, exist_ok=True)
    shutil.copy(os.path.join(DEPLOY, "deps.sh"), ctx)
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(SYSTEMD_IMAGE)
    p = subprocess.run(["docker", "build", "-q", "-t", "smolmq-systemd-test", ctx], capture_output=True, text=True)
    check(p.returncode == 0, f"docker build (systemd): {p.stderr[-2000:]}")
    root = os.path.join(TMP, "root")
    p = subprocess.run(["make", "-s", "--no-print-directory", "-C", ROOT, "install", "PREFIX=/usr/local",
                        f"DESTDIR={root}", f"BUILD={BUILD}", "DEPS_DONE=1"], capture_output=True, text=True)
    check(p.returncode == 0, f"make install DESTDIR: {p.stderr[-1500:]}")
    name = f"smolmq-systemd-{os.getpid()}"
    p = subprocess.run(["docker", "run", "-d", "--name", name, "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs",
                        "/tmp", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "-v",
                        f"{root}/usr/local:/usr/local:ro", "smolmq-systemd-test"], capture_output=True, text=True)
    check(p.returncode == 0, f"docker run (systemd): {p.stderr[-1000:]}")

    def sh(script, timeout=60):
        r = subprocess.run(["docker", "exec", name, "sh", "-ec", script], capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode:
            j = subprocess.run(["docker", "exec", name, "journalctl", "--no-pager", "-n", "30"], capture_output=True,
                               text=True).stdout
            raise AssertionError(f"in the container: {script}\n{r.stdout[-1500:]}{r.stderr[-1500:]}\n"
                                 f"its journal:\n{j}")
        return r.stdout

    def chat(tries=1):
        """A shell line: the gateway ready, then a chat (tried `tries` times)."""
        return ("for i in $(seq 50); do curl -fs http://127.0.0.1:8080/readyz >/dev/null && break; sleep 0.2; done; "
                f"for i in $(seq {tries}); do curl -fsS --max-time 30 http://127.0.0.1:8080/v1/chat/completions "
                "-H 'Content-Type: application/json' "
                "-d '{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}], \"max_tokens\": 3}' "
                "&& exit 0; sleep 0.5; done; exit 1")
    units = "smolmq-broker smolmq-worker@0 smolmq-gateway"
    try:
        sh("for i in $(seq 50); do systemctl is-system-running 2>/dev/null | grep -qE 'running|degraded' && exit 0; "
           "sleep 0.2; done; exit 1")
        sh("systemd-sysusers /usr/local/lib/sysusers.d/smolmq.conf && systemctl daemon-reload && "
           f"systemctl enable --now {units}")
        answer = json.loads(sh(chat()))
        check(answer["usage"]["completion_tokens"] == 3 and answer["model"] == "smolmq-tiny", f"{answer}")
        sh("mkdir -p /etc/smolmq && cd /etc/smolmq && for c in broker worker gateway; do "
           "/usr/local/bin/smolmq-broker --keygen $c.cert >/dev/null; done; "
           "key=$(sed -n 's/.*public-key = \"\\(.*\\)\"/\\1/p' broker.cert.pub); "
           "sed -n 's/.*public-key = \"\\(.*\\)\"/\\1/p' worker.cert.pub > worker-keys; "
           "chgrp smolmq *.cert worker-keys && chmod 0640 *.cert worker-keys; "
           "printf '%s\\n' "
           "'SMQ_BROKER_ARGS=--curve-secret /etc/smolmq/broker.cert --worker-keys /etc/smolmq/worker-keys' "
           "\"SMQ_WORKER_ARGS=--broker-key $key --key-file /etc/smolmq/worker.cert\" "
           "\"SMQ_GATEWAY_ARGS=--broker-key $key --key-file /etc/smolmq/gateway.cert\" > smolmq.env; "
           f"systemctl restart {units}")
        answer = json.loads(sh(chat()))
        check(answer["usage"]["completion_tokens"] == 3, f"{answer}")
        log = sh("journalctl --no-pager -u smolmq-broker -u smolmq-gateway")
        check(log.count("(CURVE)") >= 2, f"CURVE not on:\n{log[-1500:]}")
        # A wedged worker (stopped with SIGSTOP) under a 2 s watchdog: systemd
        # kills it and starts another, which serves.
        sh("mkdir -p /run/systemd/system/smolmq-worker@0.service.d && printf '%s\\n' '[Service]' "
           "WatchdogSec=2s TimeoutAbortSec=2s RestartSec=1s > /run/systemd/system/smolmq-worker@0.service.d/t.conf "
           "&& systemctl daemon-reload && systemctl restart smolmq-worker@0")
        wedged = sh("systemctl show -p MainPID --value smolmq-worker@0").strip()
        t0 = time.time()
        sh(f"kill -STOP {wedged}")
        sh(f"for i in $(seq 150); do [ \"$(systemctl show -p NRestarts --value smolmq-worker@0)\" -ge 1 ] && "
           f"systemctl is-active -q smolmq-worker@0 && [ \"$(systemctl show -p MainPID --value smolmq-worker@0)\" "
           f"!= {wedged} ] && exit 0; sleep 0.2; done; exit 1", timeout=60)
        print(f"    a wedged worker replaced by systemd's watchdog in {time.time() - t0:.1f} s", flush=True)
        log = sh("journalctl --no-pager -u smolmq-worker@0")
        check("Watchdog timeout" in log, f"the worker was not restarted by the watchdog:\n{log[-1500:]}")
        answer = json.loads(sh(chat(tries=40)))
        check(answer["usage"]["completion_tokens"] == 3, f"{answer}")
        sh(f"systemctl stop {units}")
        for u in units.split():
            result = sh(f"systemctl show -p Result --value {u}").strip()
            check(result == "success", f"{u} stopped with {result}")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def port_free(port):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


if __name__ == "__main__":
    try:
        sys.exit(run_tests("deploy", globals()))
    finally:
        shutil.rmtree(TMP, ignore_errors=True)
