"""Service settings: `SNRLAB_*` environment variables, built once in `get_settings()`."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SNRLAB_", extra="ignore")

    data_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "snrlab")  # as trainer.paths
    database_url: str | None = None  # default: sqlite file under data_dir
    ray_address: str | None = None  # None: start a local Ray; else connect to that cluster
    ray_namespace: str = "snrlab"
    # Folders a `folder` dataset may read; os.pathsep- or comma-separated in the environment.
    data_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)

    host: str = "127.0.0.1"
    port: int = 8000

    # Auth: mutations always need a bearer token (unless auth_enabled is off, for local hacking);
    # reads need one unless public_reads is on.
    auth_enabled: bool = True
    public_reads: bool = False

    max_body_bytes: int = 1 << 20
    # What one experiment may ask for (a 422 names the limit): sized for a small GPU cluster.
    max_steps: int = Field(default=1_000_000, ge=1)  # training steps per run
    max_num_samples: int = Field(default=50_000, ge=2)  # generated images per evaluated cell
    max_runs_per_experiment: int = Field(default=1000, ge=1)
    max_attempts: int = Field(default=3, ge=1)  # per run, counting the first
    max_concurrent_runs: int | None = Field(default=None, ge=1)  # cap on top of Ray's capacity
    dispatch_interval_s: float = Field(default=1.0, gt=0)
    # Several replicas on one PostgreSQL database: the dispatcher's lease (service.runtime.lease)
    # lasts lease_ttl_s and is renewed (or, by a standby, tried) every lease_renew_s, so a dead or
    # hung leader is replaced within about lease_ttl_s + lease_renew_s.
    lease_ttl_s: float = Field(default=8.0, gt=0)
    lease_renew_s: float = Field(default=2.0, gt=0)
    dispatcher_enabled: bool = True
    executor: str = "ray"  # "ray", or "module:factory" returning an Executor (tests)
    checkpoint_every: int | None = Field(default=None, ge=1)  # passed to the trainer if set

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, v: object) -> object:
        if isinstance(v, str):
            parts = [p for chunk in v.split(os.pathsep) for p in chunk.split(",")]
            return [p.strip() for p in parts if p.strip()]
        return v

    @model_validator(mode="after")
    def _renew_within_lease(self) -> "Settings":
        if self.lease_renew_s * 2 > self.lease_ttl_s:
            raise ValueError(f"SNRLAB_LEASE_RENEW_S ({self.lease_renew_s:g}) must be at most half of SNRLAB_LEASE_TTL_S "
                             f"({self.lease_ttl_s:g}): one late renewal must not lose the lease")
        return self

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'snrlab.db'}"

    @property
    def runs_dir(self) -> Path:
        """Ray Train storage_path: each run writes under runs_dir/<run id>/."""
        return self.data_dir / "runs"


class StorageNotShared(ValueError):
    pass


def check_shared_storage(settings: Settings) -> None:
    """Refuse a cluster address with the node-local default data directory. Ray workers on other
    nodes write checkpoints and metrics under runs_dir and this service reads them back (and a
    resumed attempt on another node needs them), so it must be a path every node mounts: with
    the default (~/.cache/snrlab, on each machine's own disk) runs would fail or restart from
    step 0 depending on where they land. A refusal at startup beats that."""
    if settings.ray_address and settings.executor == "ray" and "data_dir" not in settings.model_fields_set:
        raise StorageNotShared(
            f"SNRLAB_RAY_ADDRESS is set ({settings.ray_address}) but SNRLAB_DATA_DIR is not: runs would go to "
            f"{settings.runs_dir}, a node-local default that Ray workers on other nodes cannot reach. Set "
            "SNRLAB_DATA_DIR to a path mounted at the same place on this service and on every Ray node (NFS, "
            "a ReadWriteMany volume, object storage through a POSIX mount; see service/README.md)."
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
