"""Placement groups that a dead actor left behind are given back; nobody else's are touched."""

from __future__ import annotations

import time

import pytest


def _until(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_reclaim_removes_only_groups_whose_creator_actor_died(ray_local):
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from rmd_ray.distributed.runtime.cluster import count_actor_made_placement_groups, reclaim_orphaned_placement_groups

    @ray.remote(num_cpus=0)
    class Maker:  # stands in for Ray Train's controller, which makes its worker group's placement group
        def make(self, cpus: float) -> str:
            group = placement_group([{"CPU": cpus}])
            ray.get(group.ready())
            return group.id.hex()

    def state(pg_id: str) -> str:
        return ray.util.placement_group_table()[pg_id]["state"]

    own = placement_group([{"CPU": 0.25}])  # the driver's own: never an orphan while the job runs
    ray.get(own.ready())
    dying, living = Maker.remote(), Maker.remote()
    orphan, kept = ray.get(dying.make.remote(0.5)), ray.get(living.make.remote(0.25))
    assert count_actor_made_placement_groups() == 2
    assert reclaim_orphaned_placement_groups() == 0  # both creators alive

    ray.kill(dying)
    removed = []
    # GCS learns of the creator's death asynchronously: poll
    assert _until(lambda: removed.append(reclaim_orphaned_placement_groups()) or sum(removed) > 0)
    assert sum(removed) == 1
    assert _until(lambda: state(orphan) == "REMOVED")
    assert (state(kept), state(own.id.hex())) == ("CREATED", "CREATED")
    assert reclaim_orphaned_placement_groups() == 0 and count_actor_made_placement_groups() == 1

    ray.kill(living)
    assert _until(lambda: reclaim_orphaned_placement_groups() == 1 or state(kept) == "REMOVED")
    assert _until(lambda: state(kept) == "REMOVED") and state(own.id.hex()) == "CREATED"
    remove_placement_group(own)
