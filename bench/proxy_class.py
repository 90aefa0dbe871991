"""A class through a reverse proxy in front of app replicas that share a Ray cluster.

    DROPOUT_DEMO_DATA=../shared/mnist .venv/bin/python bench/proxy_class.py \\
        --url http://127.0.0.1:8600 [--students 6] [--preset "Overfitting lab"] [--p 0.5]

For the README's deployment recipe, run as written (a Ray head, replicas with
``DROPOUT_DEMO_RAY=auto``, nginx with sticky sessions by the identity cookie): each simulated
student (``bench/st_client.py``) arrives with an identity cookie of its own, as a returning
browser does, so the proxy spreads them over the replicas; each presses the button and stays
until its runs are done. Then it reads the cluster's registry (``RAY_AUTH_MODE`` /
``RAY_AUTH_TOKEN`` as the replicas have them): how many computations were started and how many
times a replica joined one. With every student on the same settings and Compare: 2 started,
whatever the number of replicas. Loopback URLs only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from classroom_load import PRESET, Student, med_p90, student_session


async def class_through(url: str, ps: list[float], args) -> list[Student]:
    students = [Student(i, p) for i, p in enumerate(ps)]
    t0 = time.monotonic()

    async def one(s: Student) -> Student:
        await asyncio.sleep(s.index * args.stagger)
        cookies = {"dropout_lab_id": secrets.token_hex(16)}
        return await student_session(
            url, s, args.action, args.preset, args.timeout, t0, cookies=cookies
        )

    await asyncio.wait_for(asyncio.gather(*(one(s) for s in students)), args.timeout + 60 + len(ps))
    return students


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the proxy, on a loopback address")
    parser.add_argument("--students", type=int, default=6)
    parser.add_argument("--preset", default=PRESET)
    parser.add_argument("--p", type=float, default=0.5)
    parser.add_argument("--action", default="compare", choices=["compare", "start"])
    parser.add_argument("--stagger", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--ray", default="auto", help="the cluster the replicas use")
    args = parser.parse_args()
    host = urlparse(args.url).hostname or ""
    if not host.startswith("127.") and host != "localhost":
        parser.error("load goes to loopback addresses only")
    students = asyncio.run(class_through(args.url, [args.p] * args.students, args))
    done = [s.done_s for s in students if s.done_s is not None]
    print(f"{len(done)}/{len(students)} students saw all their runs done")
    print(
        f"click → first curve point, s (median / p90): "
        f"{med_p90([s.first_point_s for s in students if s.first_point_s is not None])}"
    )
    print(f"click → done, s (median / p90): {med_p90(done)}")
    for s in students:
        if s.outcome != "done":
            print(f"  student {s.index}: {s.outcome} {(s.refusals + s.errors)[:2]}")

    import ray

    from dropout_demo.jobs.ray_executor import NAMESPACE, REGISTRY_NAME

    ray.init(address=args.ray, namespace=NAMESPACE, log_to_driver=False)
    stats = ray.get(ray.get_actor(REGISTRY_NAME, namespace=NAMESPACE).stats.remote())
    print(
        f"Ray registry: {stats['created']} computations started, {stats['joined']} joins "
        f"(a replica following a computation another replica or session started)"
    )


if __name__ == "__main__":
    main()
