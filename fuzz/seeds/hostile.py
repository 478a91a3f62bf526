#!/usr/bin/env python3
"""Write hostile pod AdmissionReviews into a corpus directory (issue 17: bounded work per review).

Usage: fuzz/seeds/hostile.py CORPUS_DIR

The shapes a mutating webhook can receive before the API server validates anything: megabytes
of annotations, tens of thousands of env bindings, a thousand containers, env bindings times
containers (the patch that grew to 146 MB), many secrets, one huge unknown key, the same env var
bound by two secrets far apart, file names that sort between a directory and its files. Each
file is at most 4 MiB (the webhook's --max-body-bytes); scripts/fuzz runs admission_review with
that -max_len and with a memory limit, so a review that allocates too much is a finding.
Generated, not checked in: the large ones are megabytes of repetition.
"""
import json
import os
import sys

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:database-password-hlRvvF"
PREFIX = "secrets.k8s.aws/"


def review(name, annotations, containers, init_containers=()):
    spec = {"containers": list(containers)}
    if init_containers:
        spec["initContainers"] = list(init_containers)
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "hostile-" + name,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "default",
            "operation": "CREATE",
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default", "annotations": annotations},
                "spec": spec,
            },
        },
    }


def containers(count, env=False):
    return [
        {"name": f"c{i}", "image": "busybox", **({"env": [{"name": "OWN", "value": "x"}]} if env else {})}
        for i in range(count)
    ]


def bindings(count, start=0):
    return ",".join(f"V{i}=k{i}" for i in range(start, start + count))


def shapes():
    opt_in = {PREFIX + "secret-arn": ARN}
    yield "annotations-3mib", review(
        "annotations-3mib",
        {**opt_in, **{f"example.com/blob-{i}": "x" * (1024 * 1024) for i in range(3)}},
        containers(1),
    )
    yield "annotations-3mib-not-opted-in", review(
        "annotations-3mib-not-opted-in",
        {f"example.com/blob-{i}": "x" * (1024 * 1024) for i in range(3)},
        containers(1),
    )
    yield "bindings-100000", review(
        "bindings-100000", {**opt_in, PREFIX + "env": bindings(100_000)}, containers(1)
    )
    yield "bindings-25000x40", review(
        "bindings-25000x40", {**opt_in, PREFIX + "env": bindings(25_000)}, containers(40, env=True)
    )
    yield "bindings-500x100", review(
        "bindings-500x100", {**opt_in, PREFIX + "env": bindings(500)}, containers(60), containers(40)
    )
    yield "containers-1000", review("containers-1000", opt_in, containers(1000))
    yield "container-names-1000", review(
        "container-names-1000",
        {**opt_in, PREFIX + "containers": ",".join(f"c{i}" for i in range(1000))},
        containers(1000),
    )
    yield "secrets-1000", review(
        "secrets-1000",
        {f"{PREFIX}secret-arn.s{i}": ARN for i in range(1000)},
        containers(1),
    )
    secrets = {f"{PREFIX}secret-arn.s{i}": ARN for i in range(100)}
    secrets.update({f"{PREFIX}env.s{i}": bindings(5, 5 * i) for i in range(100)})
    secrets[f"{PREFIX}env.s99"] += ",V0=again"
    yield "env-twice-far-apart", review("env-twice-far-apart", secrets, containers(3, env=True))
    yield "file-inside-another", review(
        "file-inside-another",
        {
            PREFIX + "secret-arn.a": ARN,
            PREFIX + "secret-arn.b": ARN,
            PREFIX + "secret-filename.b": "a-b",
            PREFIX + "secret-arn.c": ARN,
            PREFIX + "secret-filename.c": "a/c",
        },
        containers(1),
    )
    yield "unknown-key-200k", review(
        "unknown-key-200k",
        {**opt_in, PREFIX + "secret-arnx" * 10_000 + "." + "n" * 100_000: "x"},
        containers(1),
    )


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, body in shapes():
        data = json.dumps(body, separators=(",", ":")).encode()
        assert len(data) <= 4 * 1024 * 1024, (name, len(data))
        with open(os.path.join(out, f"hostile-{name}.json"), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
