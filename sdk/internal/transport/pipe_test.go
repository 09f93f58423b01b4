package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func TestPipeListenerConnects(t *testing.T) {
	l := ListenPipe()
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, err := l.DialContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server := <-accepted
	defer server.Close()
	go func() { _, _ = client.Write([]byte("hello")) }()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(server, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read %q, %v; want hello", buf, err)
	}
	if a := l.Addr(); a.Network() != "pipe" || a.String() != "in-process" {
		t.Errorf("Addr = %s %s", a.Network(), a)
	}
}

func TestPipeListenerClosed(t *testing.T) {
	l := ListenPipe()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
	}
	if _, err := l.DialContext(context.Background()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("DialContext after Close: %v, want net.ErrClosed", err)
	}
}

// A dial nobody accepts ends with its context; a Close wakes a waiting Accept.
func TestPipeListenerWaits(t *testing.T) {
	l := ListenPipe()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := l.DialContext(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("DialContext without Accept: %v, want the context's deadline", err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		done <- err
	}()
	_ = l.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept woken by Close: %v, want net.ErrClosed", err)
	}
}

// gRPC runs over it with the options plugins are served and dialled with, and a message larger than
// the pipe's single write.
func TestPipeListenerCarriesGRPC(t *testing.T) {
	l := ListenPipe()
	srv := grpc.NewServer(ServerOptions(DefaultMaxMessageBytes)...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()
	cc, err := grpc.NewClient("passthrough:///pipe", append(DialOptions(DefaultMaxMessageBytes),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return l.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	name := string(make([]byte, 1<<20)) // a 1 MiB request: many frames, several window updates
	hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: name})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("status %v", resp.GetStatus())
	}
}
