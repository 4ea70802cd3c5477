"""Argo pod names of a KFP v2 task, from the node ids the KFP API lists.

``run_details.task_details[].child_tasks[].pod_name`` holds Argo *node ids*
(kubeflow/pipelines ``backend/src/apiserver/server/api_converter.go``), which are
``<workflow>-<FNV-32a of the node name>``. Argo 3.4 and later (``POD_NAMES=v2``,
the default; KFP 2.x ships Argo 3.5+) name the pod ``<workflow>-<template>-<hash>``
with the same hash (argoproj/argo-workflows ``workflow/util/pod_name.go``
``GeneratePodName``), so the pod name follows from the node id and the template.
The UI server reads logs by pod name (``frontend/server/handlers/pod-logs.ts``).

Retry nodes: a task with a retry policy gets an executor template with Argo's
``retryStrategy`` (kubeflow/pipelines ``backend/src/v2/compiler/argocompiler/container.go``
``addContainerExecutorTemplate``, template ``retry-system-container-impl``), so its
``executor`` node is an Argo ``Retry`` node without a pod whose children, the attempts,
are named ``<retry node name>(N)`` (argo-workflows ``workflow/controller/operator.go``
``executeTemplate``). FNV-1a hashes byte by byte, so an attempt's hash is the retry
node's hash continued over ``(N)``: the attempts' node ids follow from the retry node's
id alone (:func:`attempt_node_id`), and the KFP API, which lists every node as a task
with its children, tells which of them exist.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

# The templates of a v2 container task's pods (backend/src/v2/compiler/argocompiler/
# container.go): the executor first (its log holds the component's output).
POD_TEMPLATES = ("system-container-impl", "retry-system-container-impl", "system-container-driver")
_MAX_PREFIX = 253 - 10 - 1  # pod_name.go: maxK8sResourceNameLength - k8sNamingHashLength - 1


def pod_name_v2(node_id: str, template: str) -> str:
    """The pod name Argo 3.4+ gives the node ``node_id`` running ``template``."""
    workflow, _, node_hash = node_id.rpartition("-")
    return f"{f'{workflow}-{template}'[:_MAX_PREFIX]}-{node_hash}"


def candidate_pod_names(node_id: str) -> list[str]:
    """Pod names to try for a node: v2 names per template, then the node id (v1 names)."""
    if not node_id.rpartition("-")[2].isdigit():
        return [node_id]
    return [pod_name_v2(node_id, t) for t in POD_TEMPLATES] + [node_id]


def attempt_node_id(node_id: str, attempt: int) -> str | None:
    """The node id of attempt ``attempt`` of the retry node ``node_id`` (``None``: not an
    Argo ``<workflow>-<hash>`` id)."""
    workflow, _, node_hash = node_id.rpartition("-")
    if not workflow or not node_hash.isdigit():
        return None
    h = int(node_hash)
    for byte in f"({attempt})".encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{workflow}-{h}"


def pod_nodes(node_ids: Iterable[str], known: Collection[str]) -> list[str]:
    """The pod nodes behind ``node_ids``, the newest attempt first.

    A node whose attempt 0 is among ``known`` (every node id the run lists) is a retry
    node: its attempts replace it, the last one first (its log says how the task
    ended). Other nodes stay, in reverse order (a node's later children are later pods).
    """
    out: list[str] = []
    for node in reversed(list(node_ids)):
        attempts = []
        while (attempt := attempt_node_id(node, len(attempts))) in known:
            attempts.append(attempt)
        out += reversed(attempts) if attempts else [node]
    return out
