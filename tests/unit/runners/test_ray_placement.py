"""The Ray backend's hardware, from the node rows of Ray's state API (no Ray needed): what it offers,
where it places a run, and why it refuses one (``NotPlaceable``: none such; ``NoCapacity``: all taken)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from domain.gpu_types import gpu_type_of_ray_accelerator
from runners.backends import NoCapacity, NotPlaceable, RayJobsBackend
from runners.backends.ray_entry import EXIT_MARKER, exit_status_of
from runners.backends.ray_jobs import RayNode, check_heartbeat_url, choose_node, nodes_of, ray_offers


def row(node_id: str, resources: dict[str, float], state: str = "ALIVE") -> SimpleNamespace:
    return SimpleNamespace(
        node_id=node_id, node_ip=f"10.0.0.{len(node_id)}", state=state, resources_total=resources
    )


ROWS = [
    row("head", {"CPU": 4.0, "memory": 1e9}),
    row("h100s", {"CPU": 32.0, "GPU": 8.0, "accelerator_type:H100": 1.0}),
    row("l4", {"CPU": 8.0, "GPU": 1.0, "accelerator_type:L4": 1.0}),
    row("gone", {"CPU": 8.0, "GPU": 8.0, "accelerator_type:H200": 1.0}, state="DEAD"),
    row("a100?", {"CPU": 8.0, "GPU": 4.0, "accelerator_type:A100": 1.0}),  # 40 or 80 GB: not said
]


def test_ray_s_accelerator_names_map_to_our_gpu_types() -> None:
    assert gpu_type_of_ray_accelerator("H100") == "h100-80gb"
    assert gpu_type_of_ray_accelerator("A100-80G") == "a100-80gb"
    assert gpu_type_of_ray_accelerator("A100") is None


def test_offers_are_the_largest_run_of_each_type_on_alive_nodes_it_can_name() -> None:
    assert ray_offers(nodes_of(ROWS)) == {"cpu": 1, "h100-80gb": 8, "l4": 1}


def test_a_run_goes_to_the_first_node_with_enough_of_its_type_left() -> None:
    nodes = nodes_of(ROWS)
    assert choose_node(nodes, {}, "h100-80gb", 4).node_id == "h100s"
    assert choose_node(nodes, {"h100s": 4}, "h100-80gb", 4).node_id == "h100s"
    assert choose_node(nodes, {}, "cpu", 1).node_id == "head"
    assert choose_node(nodes, {"head": 4}, "cpu", 1).node_id == "h100s"


def test_a_run_the_cluster_cannot_hold_is_not_placeable_and_one_that_must_wait_has_no_capacity() -> None:
    nodes = nodes_of(ROWS)
    with pytest.raises(NotPlaceable, match="no h200 x1"):
        choose_node(nodes, {}, "h200", 1)
    with pytest.raises(NotPlaceable, match="no h100-80gb x9"):
        choose_node(nodes, {}, "h100-80gb", 9)
    with pytest.raises(NoCapacity):
        choose_node(nodes, {"h100s": 5}, "h100-80gb", 4)


def test_the_backend_places_on_ray_node_ids_and_counts_its_own_runs() -> None:
    backend = RayJobsBackend("http://127.0.0.1:1", list_nodes=lambda: ROWS)
    assert backend.offers() == {"cpu": 1, "h100-80gb": 8, "l4": 1}
    placement = backend.place("l4", 1)
    assert (placement.gpu_type, placement.gpu_count, placement.node) == ("l4", 1, "l4")


def test_runners_on_ray_publish_heartbeats_to_pubsub_only() -> None:
    assert check_heartbeat_url("pubsub://p/t/s") == "pubsub://p/t/s"
    for url in ("stdout:", "direct://embedded"):
        with pytest.raises(ValueError, match="Pub/Sub"):
            check_heartbeat_url(url)


def test_the_runner_s_exit_status_is_read_from_the_last_marker_of_its_log() -> None:
    assert exit_status_of(f"hello\n{EXIT_MARKER}0\n") == 0
    assert exit_status_of(f"{EXIT_MARKER}-15\n") == -15
    assert exit_status_of("killed before it could say\n") is None


def test_a_node_row_without_resources_offers_nothing() -> None:
    assert nodes_of([row("bare", {})]) == [RayNode("bare", "10.0.0.4", 0)]
