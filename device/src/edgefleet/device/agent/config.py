"""The agent's configuration: a YAML file plus `EDGEFLEET_` environment overrides, typed and strict.

Env overrides use `__` for nesting: `EDGEFLEET_TELEMETRY__MODE=summary`, `EDGEFLEET_DEVICE_ID=cam-7`.
Unknown keys in the file are errors that name the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from edgefleet.device.agent.runtime_files import SHADOW_REPORT_FILE, reader_path, runtime_dir_from_environment
from edgefleet.device.agent.shadow_stats import check_share
from edgefleet.device.runtime.config import EDGETPU_LIBRARY
from edgefleet.device.runtime.probe import DEFAULT_PROBE_TIMEOUT_S
from edgefleet.device.spotcheck.config import SpotCheckConfig
from edgefleet.device.telemetry.config import TelemetryConfig
from edgefleet.device.window import MaintenanceWindow
from edgefleet.kernel.configfile import load, tag_required, tagged_union
from edgefleet.kernel.contracts.layout import SPOOL_FILE, STATUS_FILE
from edgefleet.kernel.contracts.names import ChannelName, DeviceId
from edgefleet.kernel.errors import ConfigError

ENV_PREFIX = "EDGEFLEET_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _FrameSource(_Section):
    max_fps: float = Field(default=0.0, ge=0, description="0 = as fast as inference goes")
    frame_width: int | None = Field(default=None, ge=1, description="resize captured frames to this size")
    frame_height: int | None = Field(default=None, ge=1)


class ImagesSourceConfig(_FrameSource):
    """An image file, or a directory of images cycled in name order (decoded once, kept in memory)."""

    kind: Literal["images"] = "images"
    path: Path | None = Field(default=None, description="image file or directory (cycled); required to run")
    cache_frames: int = Field(default=64, ge=1, description="decoded images kept in memory when cycling")


class VideoSourceConfig(_FrameSource):
    """A video file, played once (OpenCV: pip install 'edgefleet[video]')."""

    model_config = ConfigDict(json_schema_extra=tag_required("kind"))

    kind: Literal["video"] = "video"
    path: Path = Field(description="the video file")


class CameraSourceConfig(_FrameSource):
    """A camera, read until the agent stops (OpenCV: pip install 'edgefleet[video]')."""

    model_config = ConfigDict(json_schema_extra=tag_required("kind"))

    kind: Literal["camera"] = "camera"
    camera_index: int = Field(default=0, description="which camera (OpenCV index, /dev/videoN)")


# Where frames come from, by `kind` (images when absent); a key of another kind is an error naming it.
if TYPE_CHECKING:  # what a checker reads; at run time the annotated union below, which pydantic validates
    SourceConfig = Union[ImagesSourceConfig, VideoSourceConfig, CameraSourceConfig]
else:
    SourceConfig = tagged_union(ImagesSourceConfig, VideoSourceConfig, CameraSourceConfig, tag="kind",
                                where="source", default="images")


class InferenceConfig(_Section):
    """How the model runs.

    `device` says where to look for an Edge TPU ('auto': any; 'usb:0': that one; 'cpu': never);
    `require_edgetpu` says what to do when the Edge TPU is unusable (absent, or its delegate crashes, hangs or
    fails in the probe): false runs the release's CPU variant, true stays idle and says why.
    """

    device: str = Field(default="auto", description="'auto', 'cpu', or an Edge TPU: 'usb', 'pci', 'usb:0'")
    num_threads: int = Field(default=1, ge=1)
    top_k: int = Field(default=3, ge=1)
    score_threshold: float = Field(default=0.0, ge=0, le=1)
    require_edgetpu: bool = Field(
        default=False, description="true: idle rather than the CPU variant when the Edge TPU is unusable")
    gil_switch_interval_s: float = Field(
        default=0.0002, gt=0,
        description="the agent process's `sys.setswitchinterval` while it runs: how long the inference thread, "
                    "back from the Edge TPU, may wait for the GIL while another thread runs Python (CPython's "
                    "default, 5 ms, is two MobileNet frames on an Edge TPU, twenty at the benchmark's TPU speed; "
                    "a switch happens only when a thread waits, so a lone thread pays nothing)")
    edgetpu_library: str = Field(
        default=EDGETPU_LIBRARY, min_length=1,
        description="the Edge TPU delegate library: a name the loader finds, or a path")
    probe_timeout_s: float = Field(
        default=DEFAULT_PROBE_TIMEOUT_S, gt=0,
        description="longest wait for the Edge TPU probe (a child process: delegate, interpreter, one invoke)")

    @model_validator(mode="after")
    def _tpu_wanted_somewhere(self) -> InferenceConfig:
        if self.require_edgetpu and self.device == "cpu":
            raise ValueError("require_edgetpu: true contradicts device: cpu; use device 'auto' or an Edge TPU "
                             "('usb', 'pci', 'usb:0'), or require_edgetpu: false")
        return self


class QueueConfig(_Section):
    """Bounded queues between the stages."""

    frames: int = Field(default=4, ge=1, description="prepared frames waiting for inference")


class SwapConfig(_Section):
    """Model watch and hot swap."""

    watch_interval_s: float = Field(default=0.5, gt=0, description="how often `current` is checked")
    background_nice: int = Field(
        default=10, ge=0, le=19,
        description="niceness added to the threads that load, verify and download models, so a swap "
                    "borrows idle CPU instead of the inference thread's")


class RegistryConfig(_Section):
    """Pull mode: follow a registry channel. Off when `uri` is empty."""

    uri: str | None = Field(default=None, description="gs://bucket[/prefix] or a local directory")
    channel: ChannelName = "stable"
    poll_interval_s: float = Field(default=30.0, gt=0)
    poll_jitter: float = Field(default=0.1, ge=0, lt=1, description="each wait between polls is poll_interval_s "
                               "times a random factor in [1 - poll_jitter, 1 + poll_jitter]: a fleet started "
                               "together does not poll the registry together")
    require_signed_pointers: bool = Field(
        default=True,
        description="refuse unsigned (schema 1) channel pointers. false is the transition setting for a fleet "
        "whose pipelines do not sign yet (an agent still refuses unsigned pointers on a channel once it "
        "accepted a signed one there); README: upgrading a fleet that ran the old defaults",
    )
    window: MaintenanceWindow | None = Field(
        default=None,
        description="maintenance window of this device's group (cron, timezone, duration_minutes): a pulled "
        "version is downloaded and activated only inside it; none: any time",
    )


class ShadowConfig(_Section):
    """The shadow wave (issue 25): the store's `shadow` candidate (`edgefleet-agent shadow MODEL VERSION`) runs
    beside the current model on `share` of the frames, its answers counted in telemetry and never acted on."""

    share: float = Field(default=0.0, ge=0, le=1, description="share of the frames the candidate also runs on; "
                         "0: off (a shadow pointer is then ignored), e.g. 0.1: every tenth frame")
    queue: int = Field(default=2, ge=1, description="sampled frames waiting for the candidate; a sampled frame "
                       "that finds the queue full is dropped and counted, never waited for")
    report_interval_s: float = Field(default=2.0, gt=0, description="how often the shadow pointer is checked and "
                                     "shadow.json (in the runtime directory) rewritten")

    @field_validator("share")
    @classmethod
    def _samplable(cls, share: float) -> float:
        return check_share(share)


class StatusConfig(_Section):
    """`status.json`: rewritten on every state change (state, version, swaps, errors) and otherwise every
    `interval_s`, which must stay below the rollout's `status_max_age_s` (15 s by default)."""

    interval_s: float = Field(default=5.0, gt=0, description="longest time between two status.json writes")
    check_interval_s: float = Field(
        default=0.25, gt=0, description="how often the agent looks for a state change worth writing at once")
    latency_window: int = Field(default=512, ge=8, description="inferences behind p50/p95 in the status")


class AgentConfig(BaseSettings):
    """Everything `edgefleet-agent run` needs."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                                      frozen=True)

    device_id: DeviceId = Field(description="unique id of this device in the fleet")
    root: Path = Field(default=Path("~/.edgefleet-agent"), description="agent root: models, spool, keys")
    runtime_dir: Path | None = Field(
        default_factory=runtime_dir_from_environment,
        description="where the agent rewrites its small status files (status.json, shadow.json) every few "
        "seconds: a tmpfs spares an SD card those writes. Default: $RUNTIME_DIRECTORY, which systemd sets for "
        "deploy-agent's unit (RuntimeDirectory=, under /run), else the agent root. Readers always read "
        "<root>/status.json: the agent links it to the runtime copy when it starts. Never the spool or anything "
        "that must survive a reboot")
    model: str = Field(description="name of the model to run from the device's model store")
    public_key: Path | None = Field(
        default=None, description="release public key file or keyring directory (<key id>.pub files); default "
        "root/keys/release.pub, with the keyring root/keys/release.d beside it")
    credentials_file: Path | None = Field(
        default=None,
        description="the device's Google credentials (a service-account key or a workload identity federation "
        "configuration) for Pub/Sub telemetry and a gs:// registry; the agent and `doctor` read this same file "
        "(deploy-agent installs it 0640 root:<agent group>). None: Application Default Credentials of the "
        "process's own environment, which a `doctor` over SSH may not share")
    drain_timeout_s: float = Field(default=10.0, gt=0, description="on SIGTERM: longest wait to drain telemetry")
    refuse_development_keys: bool = Field(
        default=False, description="refuse models whose manifest says a development key signed them (production)")
    source: SourceConfig = ImagesSourceConfig()
    inference: InferenceConfig = InferenceConfig()
    queues: QueueConfig = QueueConfig()
    swap: SwapConfig = SwapConfig()
    registry: RegistryConfig = RegistryConfig()
    status: StatusConfig = StatusConfig()
    shadow: ShadowConfig = ShadowConfig()
    spot_check: SpotCheckConfig = SpotCheckConfig()
    telemetry: TelemetryConfig = TelemetryConfig()

    @field_validator("root", "runtime_dir", "public_key", "credentials_file")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @model_validator(mode="after")
    def _spot_check_has_a_bucket(self) -> AgentConfig:
        if self.spot_check.enabled and not (self.spot_check.registry or self.registry.uri):
            raise ValueError("spot_check.enabled needs a bucket to upload to: set spot_check.registry "
                             "(gs://BUCKET[/PREFIX]) or registry.uri")
        return self

    @property
    def spot_check_registry(self) -> str | None:
        """Where the spot check uploads: `spot_check.registry`, else the model registry."""
        return self.spot_check.registry or self.registry.uri

    @property
    def status_path(self) -> Path:
        """Where readers read the status: `<root>/status.json` (the file, or the agent's link to its runtime
        copy)."""
        return reader_path(self.root, STATUS_FILE)

    @property
    def runtime_path(self) -> Path:
        """The directory the agent writes status.json and shadow.json in: `runtime_dir`, else the root."""
        return self.runtime_dir if self.runtime_dir is not None else self.root

    @property
    def status_written_path(self) -> Path:
        """Where the agent itself writes status.json."""
        return self.runtime_path / STATUS_FILE

    @property
    def shadow_report_path(self) -> Path:
        """Where the agent itself writes shadow.json."""
        return self.runtime_path / SHADOW_REPORT_FILE

    @property
    def spool_path(self) -> Path:
        return self.root / SPOOL_FILE

    @property
    def public_key_path(self) -> Path:
        return self.public_key or self.root / "keys" / "release.pub"

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment wins over the file (passed as init values); no .env or secrets directories.
        return env_settings, init_settings



def load_config(path: Path | None, **overrides: Any) -> AgentConfig:
    """Reads the agent configuration from YAML `path`, `EDGEFLEET_` env vars and `overrides`.

    Raises:
        ConfigError: naming the file and every wrong, missing or unknown key.
    """
    try:
        return load(AgentConfig, path, what="agent config" if path is not None else "environment",
                    missing_fix="pass the path of your agent.yaml with --config",
                    shape_fix="see the configuration reference in README.md",
                    fix="fix the keys named above (README: configuration)", overrides=overrides)
    except SettingsError as error:  # an EDGEFLEET_<SECTION> variable that is not JSON for that section
        raise ConfigError(
            f"environment: {error}; the agent reads EDGEFLEET_* variables as overrides of its config",
            f"set a single key with '__' nesting (e.g. {ENV_PREFIX}REGISTRY__URI=...), or unset the variable "
            "in the agent's environment") from error
