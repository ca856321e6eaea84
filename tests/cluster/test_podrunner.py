"""The pod runner's network: pod addresses that take connections, a subnet of its own next to
other runs' subnets, and nothing left behind by a session that is killed."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time

from tests.cluster.controlplane import REPO_ROOT
from tests.cluster.podrunner import POD_NETWORK_PREFIX, pod_network

HOLD_A_NETWORK = """
import time
from tests.cluster.podrunner import pod_network
with pod_network() as next_ip:
    print(next_ip(), flush=True)
    time.sleep(300)
"""


def local_routes() -> list[str]:
    listed = subprocess.run(
        ["ip", "route", "show", "table", "local"], capture_output=True, text=True, check=True
    )
    return listed.stdout.splitlines()


def route_of(subnet: int) -> str | None:
    cidr = f"{POD_NETWORK_PREFIX}.{subnet}.0/24"
    return next((line for line in local_routes() if line.split()[1:2] == [cidr]), None)


def unused_subnets(count: int) -> list[int]:
    free = [third for third in range(1, 255) if route_of(third) is None]
    return random.sample(free, count)


def test_pod_addresses_take_connections_on_a_subnet_no_one_else_holds() -> None:
    taken, free = unused_subnets(2)
    # Another run's /24: one on lo, as runners before the TUN device left them.
    other = f"{POD_NETWORK_PREFIX}.{taken}.0/24"
    subprocess.run(["ip", "route", "add", "local", other, "dev", "lo"], check=True)
    try:
        with pod_network(subnets=[taken, free]) as next_ip:
            address = next_ip()
            assert address == f"{POD_NETWORK_PREFIX}.{free}.2"
            assert next_ip() == f"{POD_NETWORK_PREFIX}.{free}.3"
            with socket.create_server((address, 0)) as server:
                port = server.getsockname()[1]
                with socket.create_connection((address, port), timeout=5) as client:
                    accepted, peer = server.accept()
                    with accepted:
                        client.sendall(b"ping")
                        assert accepted.recv(4) == b"ping"
                        assert peer[0] == address
        assert route_of(free) is None, "the route goes when the network is left"
        assert route_of(taken) is not None, "another run's route stays"
    finally:
        subprocess.run(["ip", "route", "del", "local", other, "dev", "lo"], check=False)


def test_a_killed_session_leaves_no_route_and_no_device_behind() -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_NETWORK], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        address = holder.stdout.readline().strip()
        subnet = int(address.split(".")[2])
        route = route_of(subnet)
        assert route is not None, address
        device = route.split(" dev ")[1].split()[0]
        holder.send_signal(signal.SIGKILL)  # no finally, no atexit: as a killed session
        holder.wait(timeout=10)
    finally:
        holder.kill()
    deadline = time.monotonic() + 10
    while route_of(subnet) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert route_of(subnet) is None, "the kernel removed the route with the device"
    shown = subprocess.run(["ip", "link", "show", device], capture_output=True, text=True)
    assert shown.returncode != 0, shown.stdout
