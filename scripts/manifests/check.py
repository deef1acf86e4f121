#!/usr/bin/env python3
"""Checks the rendered Kubernetes manifests (kubectl kustomize output) against agentd's
drain and probes; run by scripts/manifests.sh.

Usage: check.py RENDERED.yaml [--url http://127.0.0.1:PORT]

- terminationGracePeriodSeconds >= preStop pause + SHUTDOWN_TIMEOUT + MARGIN_S, with
  SHUTDOWN_TIMEOUT read from the ConfigMap the Deployment takes its environment from;
- SHUTDOWN_TIMEOUT >= AGENT_TIMEOUT (and LLM_TIMEOUT <= AGENT_TIMEOUT): an answer that
  started before SIGTERM ends before the drain deadline, so a rolling deploy cuts none;
- the pod runs as non-root on a read-only root filesystem, every container has resource
  requests and a memory limit, and the liveness and readiness probes are set;
- with --url (a running agentd): every HTTP probe path answers 200 or 503, never 404.
Exit 0 passed, 1 failed.
"""
import argparse
import sys
import urllib.error
import urllib.request

import yaml

MARGIN_S = 10


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("rendered")
    ap.add_argument("--url")
    a = ap.parse_args()
    docs = [d for d in yaml.safe_load_all(open(a.rendered)) if d]
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    fails = []

    def check(ok, what):
        print(("PASS " if ok else "FAIL ") + what)
        if not ok:
            fails.append(what)

    dep = by.get(("Deployment", "agentd"))
    check(dep is not None, "a Deployment named agentd")
    if dep is None:
        return 1
    pod = dep["spec"]["template"]["spec"]
    c = next(x for x in pod["containers"] if x["name"] == "agentd")
    env = {}
    for src in c.get("envFrom", []):
        name = src.get("configMapRef", {}).get("name")
        if name:
            cm = by.get(("ConfigMap", name))
            check(cm is not None, f"the ConfigMap {name} the Deployment reads is rendered")
            env.update((cm or {}).get("data", {}))
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
    shutdown_ms = int(env.get("SHUTDOWN_TIMEOUT", 10000))
    agent_ms = int(env.get("AGENT_TIMEOUT", 120000))
    llm_ms = int(env.get("LLM_TIMEOUT", 60000))
    pre = c.get("lifecycle", {}).get("preStop", {})
    pre_s = pre.get("sleep", {}).get("seconds", 0)
    check(pre_s > 0, f"a preStop pause ({pre_s} s)")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    need = pre_s + shutdown_ms / 1000 + MARGIN_S
    check(grace >= need, f"terminationGracePeriodSeconds {grace} >= preStop {pre_s} s + "
                         f"SHUTDOWN_TIMEOUT {shutdown_ms / 1000:g} s + margin {MARGIN_S} s = {need:g}")
    check(shutdown_ms >= agent_ms, f"SHUTDOWN_TIMEOUT {shutdown_ms} >= AGENT_TIMEOUT {agent_ms} "
                                   "(no answer outlives the drain)")
    check(llm_ms <= agent_ms, f"LLM_TIMEOUT {llm_ms} <= AGENT_TIMEOUT {agent_ms}")
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) != 0, "runs as non-root")
    check(csc.get("readOnlyRootFilesystem") is True, "read-only root filesystem")
    check(csc.get("allowPrivilegeEscalation") is False, "no privilege escalation")
    for x in pod["containers"]:
        r = x.get("resources", {})
        check("requests" in r and "memory" in r.get("limits", {}),
              f"container {x['name']}: resource requests and a memory limit")
    probes = {k: c.get(k) for k in ("livenessProbe", "readinessProbe", "startupProbe")}
    check(probes["livenessProbe"] is not None and probes["readinessProbe"] is not None,
          "liveness and readiness probes")
    paths = sorted({p["httpGet"]["path"] for p in probes.values() if p and "httpGet" in p})
    check(probes["livenessProbe"]["httpGet"]["path"] == "/health/live", "liveness probe on /health/live")
    check(probes["readinessProbe"]["httpGet"]["path"] == "/health/ready", "readiness probe on /health/ready")
    for kind in ("Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"):
        check(any(k == kind for k, _ in by), f"a {kind}")
    if a.url:
        for path in paths:
            try:
                status = urllib.request.urlopen(a.url + path, timeout=5).status
            except urllib.error.HTTPError as e:
                status = e.code
            check(status in (200, 503), f"GET {path} on a running agentd: {status} (200 or 503)")
    print(f"{len(fails)} failed" if fails else "manifest checks passed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
