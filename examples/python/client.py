#!/usr/bin/env python3
"""Call warren from Python: publish one task to RabbitMQ and wait for its reply.

    pip install -r requirements.txt
    python client.py "The capital of France is" --max-tokens 16

Follows warren's wire contract v1: JSON body, content_type application/json, persistent,
reply_to + correlation_id, publisher confirms (a full queue nacks the publish), mandatory (a
task no queue takes is returned, not dropped). Exit code 0 on an ok reply, 1 on an error
reply or a refused or returned publish (printed to stderr), 2 when no reply came in time.
"""
import argparse
import json
import sys
import uuid

import pika


class Refused(Exception):
    """The broker did not take the task."""


def call_warren(url, queue, task, timeout_s):
    """Publish `task` (a dict) to `queue` and return the reply (a dict), or None on timeout.
    Raises Refused when the broker did not take the task."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()  # the broker confirms the publish (raises if it refuses)
        reply_queue = channel.queue_declare(queue="", exclusive=True).method.queue
        correlation_id = str(uuid.uuid4())
        try:
            channel.basic_publish(
                exchange="",
                routing_key=queue,
                body=json.dumps(task),
                properties=pika.BasicProperties(
                    content_type="application/json",
                    delivery_mode=2,
                    reply_to=reply_queue,
                    correlation_id=correlation_id,
                ),
                mandatory=True,
            )
        except pika.exceptions.UnroutableError:
            raise Refused(f"the broker returned the task: no queue {queue} (has a worker declared it?)")
        except pika.exceptions.NackError:
            raise Refused(f"the broker refused the task: queue {queue} is full, try again later")
        for method, properties, body in channel.consume(
            reply_queue, auto_ack=True, inactivity_timeout=timeout_s
        ):
            if method is None:
                return None
            reply = json.loads(body)
            # Chunks (stream) and `started` (progress) come before the final reply.
            if properties.correlation_id == correlation_id and reply["status"] not in ("chunk", "started"):
                return reply
    finally:
        connection.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    parser.add_argument("--queue", default="warren.requests")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="print the whole reply")
    args = parser.parse_args()

    task = {"prompt": args.prompt, "max_tokens": args.max_tokens, "temperature": args.temperature}
    try:
        reply = call_warren(args.url, args.queue, task, args.timeout)
    except Refused as refused:
        print(refused, file=sys.stderr)
        return 1
    if reply is None:
        print(f"no reply within {args.timeout} s", file=sys.stderr)
        return 2
    if reply["status"] == "error":
        error = reply["error"]
        print(f'{error["code"]}: {error["message"]} (retryable: {error["retryable"]})', file=sys.stderr)
        return 1
    print(json.dumps(reply) if args.json else reply["text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
