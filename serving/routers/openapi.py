"""Request bodies that endpoints parse themselves (for speed and for the error format) still appear in
the OpenAPI schema: the route references the models, ``add_schemas`` puts them in the components."""

from __future__ import annotations

from pydantic import BaseModel

REF = "#/components/schemas/{model}"


def json_body(*models: type[BaseModel]) -> dict:
    """``openapi_extra`` for a JSON body that is one of ``models``."""
    refs = [{"$ref": REF.format(model=m.__name__)} for m in models]
    schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def add_schemas(openapi: dict, *models: type[BaseModel]) -> dict:
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for m in models:
        s = m.model_json_schema(ref_template=REF)
        schemas.update(s.pop("$defs", {}))
        schemas[m.__name__] = s
    return openapi
