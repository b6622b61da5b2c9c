// Command warren-client calls warren from Go: it publishes one task to RabbitMQ and waits for
// its reply, following wire contract v1 (JSON body, persistent, reply_to + correlation_id,
// publisher confirms: a full requests queue nacks the publish; mandatory: a task no queue
// takes is returned, not dropped).
//
//	go run . -prompt "The capital of France is" -max-tokens 16
//
// Exit code 0 on an ok reply (its JSON on stdout), 1 on an error reply, a refused or a
// returned publish, 2 when no reply came in time.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

type reply struct {
	Status string `json:"status"`
	Text   string `json:"text"`
	Error  *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

var errNoReply = errors.New("no reply in time")

func newID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func callWarren(ctx context.Context, url, queue string, task map[string]any) (json.RawMessage, error) {
	conn, err := amqp.Dial(url)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return nil, fmt.Errorf("confirm mode: %w", err)
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil) // exclusive reply queue
	if err != nil {
		return nil, fmt.Errorf("reply queue: %w", err)
	}
	replies, err := ch.Consume(q.Name, "", true, true, false, false, nil)
	if err != nil {
		return nil, fmt.Errorf("consume: %w", err)
	}
	body, err := json.Marshal(task)
	if err != nil {
		return nil, err
	}
	// A mandatory publish no queue takes (no worker has declared it yet) comes back as a
	// basic.return, delivered here before its confirm; the confirm alone would say it was taken.
	returns := ch.NotifyReturn(make(chan amqp.Return, 1))
	id := newID()
	confirm, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, true, false, amqp.Publishing{
		ContentType:   "application/json",
		DeliveryMode:  amqp.Persistent,
		ReplyTo:       q.Name,
		CorrelationId: id,
		MessageId:     id,
		Body:          body,
	})
	if err != nil {
		return nil, fmt.Errorf("publish: %w", err)
	}
	// Wait reports the broker's answer: false is a nack, e.g. the requests queue is full.
	acked, err := confirm.WaitContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("confirm: %w", err)
	}
	if !acked {
		return nil, errors.New("the broker refused the task (nack): the requests queue is full, retry later")
	}
	select {
	case r := <-returns:
		if r.CorrelationId == id {
			return nil, fmt.Errorf("the broker returned the task: no queue %s (has a worker declared it?)", queue)
		}
	default:
	}
	for {
		select {
		case <-ctx.Done():
			return nil, errNoReply
		case d, ok := <-replies:
			if !ok {
				return nil, errors.New("the connection closed before the reply")
			}
			if d.CorrelationId != id {
				continue
			}
			var r reply
			if err := json.Unmarshal(d.Body, &r); err != nil {
				return nil, fmt.Errorf("reply is not JSON: %w", err)
			}
			if r.Status == "chunk" || r.Status == "started" {
				continue // streamed text or progress; the final reply follows
			}
			return d.Body, nil
		}
	}
}

func main() {
	url := flag.String("url", "amqp://guest:guest@127.0.0.1:5672/", "AMQP URL")
	queue := flag.String("queue", "warren.requests", "requests queue")
	prompt := flag.String("prompt", "The capital of France is", "text to complete")
	maxTokens := flag.Int("max-tokens", 16, "most tokens to generate")
	wait := flag.Duration("wait", 120*time.Second, "how long to wait for the reply")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), *wait)
	defer cancel()
	body, err := callWarren(ctx, *url, *queue, map[string]any{"prompt": *prompt, "max_tokens": *maxTokens})
	if errors.Is(err, errNoReply) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var r reply
	_ = json.Unmarshal(body, &r)
	if r.Status == "error" && r.Error != nil {
		fmt.Fprintf(os.Stderr, "%s: %s\n", r.Error.Code, r.Error.Message)
		os.Exit(1)
	}
	fmt.Println(string(body))
}
