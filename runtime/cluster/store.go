package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/sluicehq/sluice/runtime/pipeline"
	"github.com/sluicehq/sluice/sdk/record"
)

// storeTimeout bounds each call of the Store into Redis.
const storeTimeout = 10 * time.Second

// ErrFenced is wrapped by the error of a Put whose lease is no longer the pipeline's latest: another
// instance has acquired it since. It wraps pipeline.ErrLeaseLost too.
var ErrFenced = fmt.Errorf("cluster: fenced: another instance has acquired the pipeline's lease since (%w)", pipeline.ErrLeaseLost)

// putScript stores a position if the writer's lease is the pipeline's latest.
//
// KEYS: state, lease info. ARGV: stage, position, token. The position is stored with the token as the
// hash's fields STAGE and STAGE:token. Returns 1, or an error "FENCED <latest token>".
var putScript = goredis.NewScript(`
local latest = redis.call('HGET', KEYS[2], 'token') or '0'
if latest ~= ARGV[3] then
  return redis.error_reply('FENCED ' .. latest)
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[1] .. ':token', ARGV[3])
return 1
`)

// Store is the state store several instances share: per pipeline, the positions the host keeps for
// stages that cannot store them (at-least-once pipelines), in a Redis hash. Only the holder of the
// pipeline's latest lease can write them (Fenced), so a host that lost the lease while frozen cannot move
// them afterwards. Safe for concurrent use.
type Store struct {
	client goredis.UniversalClient
	keys   keys
}

// NewStore returns the store of the instances whose keys start with prefix (DefaultPrefix when empty).
func NewStore(client goredis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{client: client, keys: keys{prefix}}
}

// Get returns the position stored for the pipeline's stage ("source" or "buffer"), or nil.
func (s *Store) Get(id, stage string) (record.Position, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	v, err := s.client.HGet(ctx, s.keys.state(id), stage).Bytes()
	switch {
	case errors.Is(err, goredis.Nil):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("cluster: reading the stored position of pipeline %s: %w", id, err)
	}
	return record.Position(v), nil
}

// Fenced returns the store as the holder of lease l (a lease on pipeline id with fencing token token)
// uses it: its Put fails with ErrFenced once another instance has acquired the pipeline's lease.
func (s *Store) Fenced(id string, token int64) pipeline.Store {
	return &fencedStore{s: s, id: id, token: strconv.FormatInt(token, 10)}
}

type fencedStore struct {
	s     *Store
	id    string
	token string
}

func (f *fencedStore) Get(id, stage string) (record.Position, error) { return f.s.Get(id, stage) }

func (f *fencedStore) Put(id, stage string, pos record.Position) error {
	if id != f.id {
		return fmt.Errorf("cluster: the store of pipeline %s cannot store positions of pipeline %s", f.id, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	err := putScript.Run(ctx, f.s.client, []string{f.s.keys.state(id), f.s.keys.info(id)}, stage, []byte(pos), f.token).Err()
	var rerr goredis.Error
	if errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), "FENCED") {
		return fmt.Errorf("%w: this instance's token %s, the latest %s", ErrFenced, f.token,
			strings.TrimSpace(strings.TrimPrefix(rerr.Error(), "FENCED")))
	}
	if err != nil {
		return fmt.Errorf("cluster: storing the position of pipeline %s: %w", id, err)
	}
	return nil
}

// List returns the ids of the pipelines with stored positions, sorted.
func (s *Store) List(ctx context.Context) ([]string, error) {
	var (
		mu  sync.Mutex
		ids []string
	)
	scan := func(ctx context.Context, node *goredis.Client) error {
		it := node.Scan(ctx, 0, s.keys.statePattern(), 256).Iterator()
		for it.Next(ctx) {
			if id, ok := s.keys.stateID(it.Val()); ok {
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		}
		return it.Err()
	}
	var err error
	switch c := s.client.(type) {
	case *goredis.ClusterClient:
		err = c.ForEachMaster(ctx, scan)
	case *goredis.Client:
		err = scan(ctx, c)
	default:
		err = fmt.Errorf("unsupported client %T", s.client)
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: listing stored positions: %w", err)
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// Holder returns who holds pipeline id's lease now; Instance is empty when nobody does.
func (s *Store) Holder(ctx context.Context, id string) (Holder, error) {
	v, err := s.client.Get(ctx, s.keys.lease(id)).Result()
	switch {
	case errors.Is(err, goredis.Nil):
		return Holder{}, nil
	case err != nil:
		return Holder{}, fmt.Errorf("cluster: reading the lease of pipeline %s: %w", id, err)
	}
	tok, owner, _ := strings.Cut(v, " ")
	h := Holder{Owner: owner}
	h.Instance, _, _ = strings.Cut(owner, "#")
	h.Token, _ = strconv.ParseInt(tok, 10, 64)
	return h, nil
}

// Token returns the fencing token of pipeline id's lease: the holder's, or when nobody holds it the last
// one issued (0 when none ever was). `sluice verify --repair` opens the pipeline's buffer with it, so that
// its append is neither refused nor fences the running holder.
func (s *Store) Token(ctx context.Context, id string) (int64, error) {
	h, err := s.Holder(ctx, id)
	if err != nil || h.Instance != "" {
		return h.Token, err
	}
	v, err := s.client.HGet(ctx, s.keys.info(id), "token").Result()
	switch {
	case errors.Is(err, goredis.Nil):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("cluster: reading the last token of pipeline %s: %w", id, err)
	}
	t, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("cluster: the last token of pipeline %s is %q, not a number", id, v)
	}
	return t, nil
}

// Delete forgets the pipeline's stored positions (`sluice reset`). It refuses while an instance holds the
// pipeline's lease: that instance would store its positions again.
func (s *Store) Delete(ctx context.Context, id string) error {
	h, err := s.Holder(ctx, id)
	if err != nil {
		return err
	}
	if h.Instance != "" {
		return fmt.Errorf("cluster: pipeline %s is running on instance %s: stop it there (or remove it from the connector files and reload) before resetting it", id, h.Instance)
	}
	if err := s.client.Del(ctx, s.keys.state(id)).Err(); err != nil {
		return fmt.Errorf("cluster: deleting the stored positions of pipeline %s: %w", id, err)
	}
	return nil
}
