"""Argo pod names of a KFP v2 task, from the node ids the KFP API lists.

``run_details.task_details[].child_tasks[].pod_name`` holds Argo *node ids*
(kubeflow/pipelines ``backend/src/apiserver/server/api_converter.go``), which are
``<workflow>-<FNV-32a of the node name>``. Argo 3.4 and later (``POD_NAMES=v2``,
the default; KFP 2.x ships Argo 3.5+) name the pod ``<workflow>-<template>-<hash>``
with the same hash (argoproj/argo-workflows ``workflow/util/pod_name.go``
``GeneratePodName``), so the pod name follows from the node id and the template.
The UI server reads logs by pod name (``frontend/server/handlers/pod-logs.ts``).
"""

from __future__ import annotations

# The templates of a v2 container task's pods (backend/src/v2/compiler/argocompiler/
# container.go): the executor first (its log holds the component's output).
POD_TEMPLATES = ("system-container-impl", "system-container-driver")
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
