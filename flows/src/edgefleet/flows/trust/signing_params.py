"""How the pipelines sign: the release key's source (a Prefect Secret block, a key file, or a development key) and
how long a signed channel pointer stays valid. One form section, used by the release, the rollouts, promotion and
the channel re-signing (`edgefleet.flows.trust.release_key` reads it)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgefleet.kernel.contracts.manifest import MAX_POINTER_VALIDITY_DAYS

DEFAULT_DEV_KEY = "~/.edgefleet/keys/release-signing.key"


class SigningParams(BaseModel):
    """The Ed25519 key that signs the manifest (and the channel pointers)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    secret_block: str | None = Field(
        default=None, description="Name of a Prefect Secret block holding the PEM private key"
    )
    key_file: str | None = Field(
        default=None,
        description=f"PEM private key file. With neither set, a development key at {DEFAULT_DEV_KEY} is used "
        "(created when missing)",
    )
    dev_key_file: str = Field(default=DEFAULT_DEV_KEY, description="Where the development key lives")
    allow_development_key: bool = Field(
        default=False, description="Let the development key sign for a gs:// registry (test buckets only)"
    )
    pointer_validity_days: float = Field(
        default=14.0, gt=0, le=MAX_POINTER_VALIDITY_DAYS,
        description="How long a signed channel pointer stays valid (re-signed before; agents refuse longer)"
    )

    @property
    def validity(self) -> timedelta:
        """How long a pointer signed with these settings stays valid."""
        return timedelta(days=self.pointer_validity_days)

    @model_validator(mode="after")
    def _one_source(self) -> SigningParams:
        if self.secret_block and self.key_file:
            raise ValueError("signing: set secret_block or key_file, not both")
        return self
