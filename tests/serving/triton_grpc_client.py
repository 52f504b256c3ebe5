"""Run tritonclient's gRPC client in its own process and print what it saw as JSON.

tritonclient.grpc and kserve both register the Open Inference Protocol messages (package ``inference``) in
protobuf's default descriptor pool, so the two cannot be imported into one process: the tests talk to the
servers through tritonclient.grpc from here.

Usage: ``python -m tests.serving.triton_grpc_client ADDRESS MODEL OUTPUT < request.json``, where the request
is ``{"inputs": [{"name": ..., "datatype": ..., "data": [[...], ...]}]}``, optionally with ``"outputs"``
(names asked for; each one's data is then reported under ``"results"``) and ``"parameters"``.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import tritonclient.grpc as triton_grpc
from tritonclient.utils import InferenceServerException


def main() -> None:
    address, model, output = sys.argv[1:4]
    request = json.load(sys.stdin)
    client = triton_grpc.InferenceServerClient(address)
    metadata = client.get_model_metadata(model)
    report: dict = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "inputs": [[t.name, t.datatype, list(t.shape)] for t in metadata.inputs],
        "outputs": [[t.name, t.datatype, list(t.shape)] for t in metadata.outputs],
    }
    tensors = []
    for spec in request["inputs"]:
        data = np.array(spec["data"], dtype=np.float32 if spec["datatype"] == "FP32" else np.float64)
        tensor = triton_grpc.InferInput(spec["name"], list(data.shape), spec["datatype"])
        tensor.set_data_from_numpy(data)
        tensors.append(tensor)
    asked = request.get("outputs")
    requested = [triton_grpc.InferRequestedOutput(name) for name in asked] if asked else None
    try:
        result = client.infer(model, tensors, outputs=requested, parameters=request.get("parameters"))
        report["result"] = result.as_numpy(output).tolist()
        if asked:
            response = result.get_response(as_json=True)
            report["results"] = {name: result.as_numpy(name).tolist() for name in asked}
            report["output_names"] = [tensor["name"] for tensor in response["outputs"]]
    except InferenceServerException as error:
        report["error"] = {"status": error.status(), "message": error.message()}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
