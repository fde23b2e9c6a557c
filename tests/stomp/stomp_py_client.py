"""Drives actormq's STOMP listener with a real third-party client, stomp.py.

Usage: python3 stomp_py_client.py HOST PORT
Each scenario asserts on what arrives; the script exits 0 only if all pass.
Run by tests/stomp_python.rs against a broker it starts on port 0.
"""

import sys
import threading
import time
import uuid

import stomp

HOST, PORT = sys.argv[1], int(sys.argv[2])
WAIT = 10.0


class Collector(stomp.ConnectionListener):
    """Keeps every MESSAGE, RECEIPT and ERROR, and lets the test wait for them."""

    def __init__(self):
        self.cv = threading.Condition()
        self.messages = []
        self.receipts = set()
        self.errors = []

    def on_message(self, frame):
        with self.cv:
            self.messages.append(frame)
            self.cv.notify_all()

    def on_receipt(self, frame):
        with self.cv:
            self.receipts.add(frame.headers["receipt-id"])
            self.cv.notify_all()

    def on_error(self, frame):
        with self.cv:
            self.errors.append(frame)
            self.cv.notify_all()

    def wait_for(self, what, predicate, timeout=WAIT):
        with self.cv:
            if not self.cv.wait_for(predicate, timeout):
                raise AssertionError(f"timed out waiting for {what}; errors: {[e.body for e in self.errors]}")

    def wait_messages(self, n, timeout=WAIT):
        self.wait_for(f"{n} messages (have {len(self.messages)})", lambda: len(self.messages) >= n, timeout)
        return list(self.messages)

    def wait_receipt(self, receipt):
        self.wait_for(f"receipt {receipt}", lambda: receipt in self.receipts)


def connect(version=stomp.Connection12):
    conn = version([(HOST, PORT)], heartbeats=(0, 0))
    listener = Collector()
    conn.set_listener("collector", listener)
    conn.connect(wait=True)
    return conn, listener


def unique(name):
    return f"/queue/py.{name}.{uuid.uuid4().hex[:8]}"


def send_receive_and_ack_individually():
    conn, got = connect()
    queue = unique("individual")
    conn.send(destination=queue, body="one", receipt="s1", headers={"x-user": "kept"})
    got.wait_receipt("s1")
    conn.subscribe(destination=queue, id="sub", ack="client-individual")
    [message] = got.wait_messages(1)
    assert message.body == "one", message.body
    assert message.headers["x-user"] == "kept", message.headers
    assert message.headers["subscription"] == "sub"
    assert message.headers["destination"] == queue
    conn.ack(message.headers["ack"], receipt="a1")
    got.wait_receipt("a1")
    conn.disconnect()

    # Acknowledged: a new subscriber finds nothing.
    conn, got = connect()
    conn.subscribe(destination=queue, id="again", ack="auto")
    time.sleep(0.3)  # an absence cannot be polled for; nothing may arrive in this window
    assert not got.messages, [m.body for m in got.messages]
    conn.disconnect()


def client_ack_is_cumulative_and_unacked_is_redelivered():
    conn, got = connect()
    queue = unique("client")
    for i in range(5):
        conn.send(destination=queue, body=f"m{i}")
    conn.subscribe(destination=queue, id="sub", ack="client")
    messages = got.wait_messages(5)
    assert [m.body for m in messages] == [f"m{i}" for i in range(5)]
    conn.ack(messages[2].headers["ack"], receipt="a")
    got.wait_receipt("a")
    conn.disconnect()

    # m0..m2 were acknowledged by the cumulative ACK; m3, m4 come back, redelivered.
    conn, got = connect()
    conn.subscribe(destination=queue, id="again", ack="auto")
    messages = got.wait_messages(2)
    assert [m.body for m in messages] == ["m3", "m4"], [m.body for m in messages]
    assert all(m.headers.get("redelivered") == "true" for m in messages), [m.headers for m in messages]
    conn.disconnect()


def nack_redelivers():
    conn, got = connect()
    queue = unique("nack")
    conn.send(destination=queue, body="retry me")
    conn.subscribe(destination=queue, id="sub", ack="client-individual")
    [first] = got.wait_messages(1)
    conn.nack(first.headers["ack"])
    second = got.wait_messages(2)[1]
    assert second.body == "retry me"
    assert second.headers.get("redelivered") == "true", second.headers
    conn.ack(second.headers["ack"])
    conn.disconnect()


def transactions_commit_or_abort():
    conn, got = connect()
    queue = unique("tx")
    conn.subscribe(destination=queue, id="sub", ack="auto")
    tx = conn.begin()
    conn.send(destination=queue, body="aborted 1", transaction=tx)
    conn.send(destination=queue, body="aborted 2", transaction=tx)
    conn.abort(tx)
    tx = conn.begin()
    conn.send(destination=queue, body="committed 1", transaction=tx)
    conn.send(destination=queue, body="committed 2", transaction=tx)
    time.sleep(0.2)  # an absence cannot be polled for: nothing arrives before COMMIT
    assert not got.messages, [m.body for m in got.messages]
    conn.commit(tx, receipt="c")
    got.wait_receipt("c")
    messages = got.wait_messages(2)
    assert [m.body for m in messages] == ["committed 1", "committed 2"], [m.body for m in messages]
    conn.disconnect()


def request_reply_through_a_temporary_queue():
    service = unique("service")
    server, requests = connect()
    server.subscribe(destination=service, id="svc", ack="client-individual", receipt="ready")
    requests.wait_receipt("ready")

    def serve():
        for _ in range(3):
            requests.wait_for("a request", lambda: len(requests.messages) > served[0])
            request = requests.messages[served[0]]
            served[0] += 1
            server.send(
                destination=request.headers["reply-to"],
                body=request.body.upper(),
                headers={"correlation-id": request.headers["correlation-id"]},
            )
            server.ack(request.headers["ack"])

    served = [0]
    worker = threading.Thread(target=serve)
    worker.start()

    client, replies = connect()
    client.subscribe(destination="/temp-queue/replies", id="replies", ack="auto", receipt="sub")
    replies.wait_receipt("sub")
    for i in range(3):
        client.send(
            destination=service,
            body=f"question {i}",
            headers={"reply-to": "/temp-queue/replies", "correlation-id": f"c{i}"},
        )
    answers = replies.wait_messages(3)
    worker.join(WAIT)
    assert sorted((m.headers["correlation-id"], m.body) for m in answers) == [
        (f"c{i}", f"QUESTION {i}") for i in range(3)
    ], [(m.headers, m.body) for m in answers]
    client.disconnect()
    server.disconnect()


def stomp_1_1_acks_by_message_id():
    conn, got = connect(stomp.Connection11)
    queue = unique("v11")
    conn.send(destination=queue, body="old style")
    conn.subscribe(destination=queue, id="s11", ack="client-individual")
    [message] = got.wait_messages(1)
    conn.ack(message.headers["message-id"], "s11", receipt="a11")
    got.wait_receipt("a11")
    conn.disconnect()


def heartbeats_are_negotiated():
    conn = stomp.Connection12([(HOST, PORT)], heartbeats=(200, 200))
    listener = Collector()
    conn.set_listener("collector", listener)
    conn.connect(wait=True)
    queue = unique("heartbeat")
    # Longer than the negotiated interval: the connection stays up on heart-beats alone.
    time.sleep(1.5)
    conn.send(destination=queue, body="still here", receipt="hb")
    listener.wait_receipt("hb")
    assert conn.is_connected()
    conn.disconnect()


def topics_fan_out():
    topic = f"/topic/py.{uuid.uuid4().hex[:8]}"
    subscribers = [connect() for _ in range(3)]
    for i, (conn, _) in enumerate(subscribers):
        conn.subscribe(destination=topic, id=f"t{i}", ack="auto", receipt=f"t{i}")
    for i, (_, got) in enumerate(subscribers):
        got.wait_receipt(f"t{i}")
    publisher, _ = connect()
    for i in range(10):
        publisher.send(destination=topic, body=f"tick {i}")
    for conn, got in subscribers:
        assert [m.body for m in got.wait_messages(10)] == [f"tick {i}" for i in range(10)]
        conn.disconnect()
    publisher.disconnect()


SCENARIOS = [
    send_receive_and_ack_individually,
    client_ack_is_cumulative_and_unacked_is_redelivered,
    nack_redelivers,
    transactions_commit_or_abort,
    request_reply_through_a_temporary_queue,
    stomp_1_1_acks_by_message_id,
    heartbeats_are_negotiated,
    topics_fan_out,
]

failed = 0
for scenario in SCENARIOS:
    try:
        scenario()
        print(f"ok     {scenario.__name__}")
    except Exception as e:  # report every scenario, then fail
        failed += 1
        print(f"FAILED {scenario.__name__}: {type(e).__name__}: {e}")
print(f"{len(SCENARIOS) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
