"""The other end of the MESH integration tests: NHS England's own Python mesh-client (5.0.2).

Run with .mesh/venv/bin/python (the integration suites and `itk3 demo --mesh` use it). One JSON request on stdin, one JSON answer on stdout:

  {"op": "send", "url", "mailbox", "password", "shared_key", "to", "workflow_id",
   "body_b64", "local_id"?, "subject"?, "filename"?, "content_type"?, "max_chunk_size"?, "compress"?}
    -> {"message_id"}
  {"op": "receive", "url", "mailbox", "password", "shared_key"}
    -> {"messages": [{"message_id", "sender", "workflow_id", "local_id", "body_b64"}]}  (each acknowledged)
"""

import base64
import json
import sys

from mesh_client import MeshClient


def client(req):
    return MeshClient(
        req["url"], req["mailbox"], req["password"], shared_key=req["shared_key"].encode("utf-8"), verify=False
    )


def send(req):
    kwargs = {"workflow_id": req["workflow_id"]}
    for key in ("local_id", "subject", "filename", "content_type"):
        if req.get(key):
            kwargs[key] = req[key]
    with client(req) as mesh:
        mesh.handshake()
        message_id = mesh.send_message(
            req["to"],
            base64.b64decode(req["body_b64"]),
            max_chunk_size=req.get("max_chunk_size"),
            compress=req.get("compress", False),
            **kwargs,
        )
    return {"message_id": message_id}


def receive(req):
    out = []
    with client(req) as mesh:
        mesh.handshake()
        for message_id in mesh.list_messages():
            message = mesh.retrieve_message(message_id)
            body = message.read()
            out.append(
                {
                    "message_id": message_id,
                    "sender": message.sender,
                    "workflow_id": message.workflow_id,
                    "local_id": message.local_id,
                    "body_b64": base64.b64encode(body).decode("ascii"),
                }
            )
            message.acknowledge()
    return {"messages": out}


def main():
    req = json.load(sys.stdin)
    ops = {"send": send, "receive": receive}
    json.dump(ops[req["op"]](req), sys.stdout)


if __name__ == "__main__":
    main()
