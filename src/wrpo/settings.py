"""The base of every group of settings that stages record (sampling, scoring, splitting): a frozen pydantic
model, and its partial form for settings that replace some of another's."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model, model_serializer


class Settings(BaseModel):
    """Settings as samples and manifests record them. ADDED names the settings added after such records were
    first kept: left at their default they are left out of the record, so that what was made before they existed
    still resumes and is still up to date."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ADDED: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _recorded(self, handler) -> dict[str, Any]:
        settings = handler(self)
        for name in self.ADDED:
            if name in settings and getattr(self, name) == type(self).model_fields[name].get_default(
                    call_default_factory=True):
                del settings[name]
        return settings


class Overrides(BaseModel):
    """Settings of which only those given count: recorded without the others."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_serializer(mode="wrap")
    def _given(self, handler) -> dict[str, Any]:
        return {name: value for name, value in handler(self).items() if value is not None}


def optional_fields(model: type[BaseModel], name: str) -> type[Overrides]:
    """`model` with every field optional and unset by default, its checks and help kept: settings that replace
    some of another's. Made from the fields so that each setting is still written once."""
    fields = {}
    for field_name, field in model.model_fields.items():
        checked = Annotated[(field.annotation, *field.metadata)] if field.metadata else field.annotation
        fields[field_name] = (checked | None, Field(default=None, description=field.description))
    return create_model(name, __base__=Overrides, **fields)
