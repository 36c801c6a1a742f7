"""Speaks the kubelet's streaming protocols over WebSocket with the
Kubernetes Python client's own classes (the channel protocol kubectl's
WebSocket transport speaks). The tests run it against hulld's streaming
URLs.

    kubews.py exec URL STDIN     prints {"stdout", "stderr", "code"} as JSON
    kubews.py portforward URL PORT REQUEST
                                 sends REQUEST to PORT, prints the answer
"""

import json
import sys

from kubernetes.client import Configuration
from kubernetes.stream.ws_client import PortForward, WSClient, create_websocket, get_websocket_url


def run_exec(url, stdin):
    client = WSClient(Configuration(), get_websocket_url(url), None, True)
    if stdin:
        client.write_stdin(stdin)
    client.run_forever(timeout=60)
    if client.is_open():
        sys.exit("the session did not end")
    out = client.read_stdout() or ""
    err = client.read_stderr() or ""
    print(json.dumps({"stdout": out, "stderr": err, "code": client.returncode}))


def run_portforward(url, port, request):
    ws = create_websocket(
        Configuration(),
        get_websocket_url(url + "?port=" + port),
        {"sec-websocket-protocol": "v4.channel.k8s.io"},
    )
    pf = PortForward(ws, [int(port)])
    sock = pf.socket(int(port))
    sock.settimeout(60)
    sock.sendall(request.encode())
    answer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    sock.close()
    error = pf.error(int(port))
    if error:
        sys.exit(error)
    sys.stdout.write(answer.decode(errors="replace"))


def main():
    mode = sys.argv[1]
    if mode == "exec":
        run_exec(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
    elif mode == "portforward":
        run_portforward(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit("unknown mode " + mode)


if __name__ == "__main__":
    main()
