"""The explicit table of actions: one declaration per action, one dispatch path."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rkvstore.errors import ApiError, ErrorSpec
from rkvstore.services.audit import Trail
from rkvstore.services.context import CallContext
from rkvstore.services.params import Param, ParamSpec

AccessLevel = Literal["list", "read", "create", "update", "delete"]
Handler = Callable[[CallContext, dict[str, Any]], dict[str, Any]]
Canonical = Callable[[dict[str, Any], str, str], dict[str, Any]]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    version: str
    params: ParamSpec
    handler: Handler
    access_level: AccessLevel
    # Resource path after ``acs:<service>:<region>:<account>:``; ``{Param}`` is
    # filled from the parsed parameters.
    resource: str
    # The RAM service prefix: of the RAM action (``<service>:<name>``) and the ARNs.
    service: str
    # A product whose resources are global (RAM's users, groups, policies) names
    # them in ARNs with an empty region.
    regional_arns: bool = True
    # A parameter that, left out, means the caller itself (RAM's UserName on
    # AccessKey actions): the ARN then names the calling user.
    self_param: str | None = None
    # Further resources the caller must also be allowed on (attaching a policy
    # needs the policy as well as the user: else anyone could attach anything).
    also_on: tuple[str, ...] = ()
    # How the audit trail names the product and the resource (issue 14);
    # ``event_resource``: the path events name when it is narrower than
    # ``resource`` (an instance's account), filled like it.
    trail: Trail | None = None
    event_resource: str | None = None
    # The parameters with their resource names made canonical (KMS: a secret's
    # ARN as its name), given the caller's region and account ID. Applied before
    # anything names the resource (RAM, the audit trail, the handler): a resource
    # named two ways must be authorized as one.
    canonical: Canonical | None = None

    @property
    def ram_action(self) -> str:
        return f"{self.service}:{self.name}"

    def resource_arns(self, region: str, account_id: str, params: dict[str, Any]) -> list[str]:
        """The ARNs RAM evaluates; a parameter the call left out stands as ``*``."""
        values = _AnyMissing({k: v for k, v in params.items() if isinstance(v, str)})
        region = region if self.regional_arns else ""
        return [
            f"acs:{self.service}:{region}:{account_id}:{resource.format_map(values)}"
            for resource in (self.resource, *self.also_on)
        ]

    def event_path(self, params: dict[str, Any]) -> str:
        """The resource an audit event names (a parameter left out stands as ``*``)."""
        values = _AnyMissing({k: v for k, v in params.items() if isinstance(v, str)})
        return (self.event_resource or self.resource).format_map(values)

    @property
    def event_trail(self) -> Trail:
        return self.trail or Trail(self.service)


class SpecMaker:
    """One product's way of declaring its actions: its version and RAM service fixed."""

    def __init__(
        self,
        version: str,
        service: str,
        *,
        regional_arns: bool = True,
        trail: Trail | None = None,
    ) -> None:
        self.version, self.service, self.regional_arns = version, service, regional_arns
        self.trail = trail

    def __call__(
        self,
        name: str,
        handler: Handler,
        level: AccessLevel,
        resource: str,
        *params: Param,
        self_param: str | None = None,
        also_on: tuple[str, ...] = (),
        canonical: Canonical | None = None,
    ) -> ActionSpec:
        return ActionSpec(
            name=name,
            version=self.version,
            params=ParamSpec(params),
            handler=handler,
            access_level=level,
            resource=resource,
            service=self.service,
            regional_arns=self.regional_arns,
            self_param=self_param,
            also_on=also_on,
            trail=self.trail,
            canonical=canonical,
        )


class _AnyMissing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "*"


class Registry:
    def __init__(
        self,
        specs: Iterable[ActionSpec] = (),
        *,
        translations: Mapping[str, Mapping[str, ErrorSpec]] | None = None,
    ) -> None:
        self._by_key: dict[tuple[str, str], ActionSpec] = {}
        # version -> {kernel code -> the product's own entry}: a product whose
        # clients know other codes for the same failures (KMS) answers with those.
        self._translations = dict(translations or {})
        for spec in specs:
            self.add(spec)

    def translate(self, version: str, err: ApiError) -> ApiError:
        """``err`` as the product of ``version`` answers it."""
        spec = self._translations.get(version, {}).get(err.code)
        if spec is None:
            return err
        translated = ApiError(spec, headers=err.headers, detail=err.detail)
        translated.__cause__ = err
        return translated

    def add(self, spec: ActionSpec) -> None:
        key = (spec.version, spec.name)
        if key in self._by_key:
            raise ValueError(f"action {spec.name} ({spec.version}) declared twice")
        self._by_key[key] = spec

    def knows_version(self, version: str) -> bool:
        return any(v == version for v, _ in self._by_key)

    def lookup(self, version: str, action: str) -> ActionSpec | None:
        return self._by_key.get((version, action))

    def __iter__(self) -> Any:
        return iter(self._by_key.values())
