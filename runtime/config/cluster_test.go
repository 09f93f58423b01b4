package config

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/sluicehq/sluice/runtime/cluster"
)

// TestCluster loads a file with every key of cluster, references included: the connection settings are
// checked against the Redis buffer's spec and get its defaults, and Print shows neither the password nor
// an instance id that came from a reference.
func TestCluster(t *testing.T) {
	f, err := load(t, "c.yaml", `version: 1
cluster:
  redis: { addr: "redis.internal:6380", password: "${env:TOKEN}", tls: true, timeout: 2s }
  lease_ttl: 4s
  instance_id: "etl-${env:COUNT}"
  key_prefix: prod.sluice
pipelines: [{id: a, source: {plugin: generate}, sink: {plugin: discard}}]
`)
	if err != nil {
		t.Fatal(err)
	}
	c := f.Cluster
	if c == nil || c.LeaseTTL != 4*time.Second || c.InstanceID != "etl-500" || c.KeyPrefix != "prod.sluice" {
		t.Fatalf("cluster %+v", c)
	}
	for k, want := range map[string]any{"addr": "redis.internal:6380", "password": "s3cr3t-token", "tls": true,
		"timeout": "2s", "dial_timeout": "5s", "db": int64(0), "cluster": false} {
		if got := c.Redis[k]; got != want {
			t.Errorf("redis %s = %#v, want %#v", k, got, want)
		}
	}
	if s := c.String(); s != "Redis at redis.internal:6380, lease TTL 4s, keys prod.sluice:*" {
		t.Errorf("String() = %q", s)
	}
	var b bytes.Buffer
	if err := f.Print(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"cluster:\n  redis:\n", "    addr: redis.internal:6380\n", "    password: <redacted>\n",
		"  lease_ttl: 4s\n", "  instance_id: <redacted>\n", "  key_prefix: prod.sluice\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("Print does not show %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "s3cr3t") || strings.Contains(out, "etl-500") {
		t.Errorf("Print shows a secret or a referenced value:\n%s", out)
	}

	same, err := load(t, "d.yaml", `version: 1
cluster:
  instance_id: etl-500
  key_prefix: prod.sluice
  lease_ttl: 4000ms
  redis: { timeout: 2s, tls: true, password: s3cr3t-token, addr: "redis.internal:6380" }
pipelines: [{id: b, source: {plugin: generate}, sink: {plugin: discard}}]
`)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Same(same.Cluster) {
		t.Error("the same cluster written differently is not Same")
	}
	same.Cluster.LeaseTTL = time.Second
	if c.Same(same.Cluster) || c.Same(nil) || !(*Cluster)(nil).Same(nil) {
		t.Error("Same does not tell clusters apart")
	}
}

// TestClusterDefaults: cluster: {} is a cluster on the default Redis with the default TTL and prefix; a
// file without the key has none.
func TestClusterDefaults(t *testing.T) {
	f, err := load(t, "c.json", `{"version": 1, "cluster": {}, "pipelines": [{"id": "a", "source": {"plugin": "generate"}, "sink": {"plugin": "discard"}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	c := f.Cluster
	if c == nil || c.LeaseTTL != cluster.DefaultTTL || c.KeyPrefix != cluster.DefaultPrefix || c.InstanceID != "" ||
		c.Redis["addr"] != "127.0.0.1:6379" {
		t.Fatalf("cluster %+v", c)
	}
	f, err = load(t, "d.yaml", "version: 1\npipelines: [{id: a, source: {plugin: generate}, sink: {plugin: discard}}]\n")
	if err != nil || f.Cluster != nil {
		t.Fatalf("cluster %+v, err %v", f.Cluster, err)
	}
}
