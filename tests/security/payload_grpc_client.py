"""Send one V2 gRPC inference with a chosen request id and tensor shape (tritonclient), print the outcome.

tritonclient.grpc and kserve register the same protobuf messages, so they cannot share the test process (see
``tests/serving/triton_grpc_client.py``): the payload attacks run this as a subprocess.

Usage: ``python -m tests.security.payload_grpc_client ADDRESS MODEL < request.json`` with
``{"id": ..., "inputs": [{"name": ..., "shape": [...], "value": 1.0}]}`` (every element of a tensor is
``value``, FP64). Prints ``{"status": "OK" | "StatusCode.X", "id": ..., "message": ...}``.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException


def main() -> None:
    address, model = sys.argv[1:3]
    request = json.load(sys.stdin)
    client = triton_grpc.InferenceServerClient(address)
    tensors = []
    for spec in request["inputs"]:
        tensor = triton_grpc.InferInput(spec["name"], spec["shape"], "FP64")
        tensor.set_data_from_numpy(np.full(spec["shape"], spec["value"], dtype=np.float64))
        tensors.append(tensor)
    try:
        answer = client.infer(model, tensors, request_id=request["id"], client_timeout=60)
        report = {"status": "OK", "id": answer.get_response().id, "message": ""}
    except InferenceServerException as error:
        report = {"status": str(error.status()), "id": None, "message": error.message()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
