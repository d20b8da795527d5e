"""Prepares the Matrix spec's OpenAPI (v1.19) for schemathesis runs against Vouch.

The definitions are the law, but in a few places they are looser or narrower than the
spec's own prose. Every change made here is one of these, with its reason; nothing else is
touched. Input and output paths are the two arguments.
"""
import copy
import json
import sys

ERROR = {
    "type": "object",
    "required": ["errcode", "error"],
    "properties": {"errcode": {"type": "string"}, "error": {"type": "string"}},
}

# Statuses the prose allows on every endpoint, though most operations do not list them:
GENERIC = {
    # §1.2 "Common error codes": M_BAD_JSON / M_NOT_JSON / M_MISSING_PARAM / M_INVALID_PARAM
    # can be returned by any endpoint for malformed input.
    "400": "Malformed input (common error codes, any endpoint)",
    # §1.1: a missing or unknown access token is 401 on every authenticated endpoint.
    "401": "Missing or unknown access token",
    # Bodies over the server's limit: M_TOO_LARGE (common error codes).
    "413": "Request body too large",
    # §1.3: "Homeservers SHOULD implement rate limiting" on any endpoint.
    "429": "Rate limited",
}

# The schema of responses Vouch writes as plain JSON errors.
def error_response(description):
    return {"description": description, "content": {"application/json": {"schema": copy.deepcopy(ERROR)}}}


def main(src, dst):
    spec = json.load(open(src))
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            responses = op["responses"]
            for status, why in GENERIC.items():
                if status not in responses:
                    responses[status] = error_response(why)
                elif status == "401":
                    # UIA endpoints document 401 as the UIA body only; the same status also
                    # carries token errors (§1.1), so either shape is valid.
                    content = responses[status].setdefault("content", {}).setdefault("application/json", {})
                    uia = content.get("schema", {})
                    content["schema"] = {"anyOf": [uia, copy.deepcopy(ERROR)]}
    json.dump(spec, open(dst, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
