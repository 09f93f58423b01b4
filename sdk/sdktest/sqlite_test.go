package sdktest_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"

	_ "modernc.org/sqlite" // a pure-Go database/sql driver

	"github.com/sluicehq/sluice/sdk"
	"github.com/sluicehq/sluice/sdk/record"
	"github.com/sluicehq/sluice/sdk/sdktest"
)

// sqlSink writes records to a SQLite database through a database/sql pool, with the batch's position in
// the same transaction. The pool is opened in Open and lives as long as the stage: it is closed when the
// stage's context ends, after Close or when the stage is abandoned. It needs nothing more to pass the
// suite, the goroutine leak check included (database/sql runs a goroutine per pool until it is closed).
type sqlSink struct {
	sdk.UnimplementedSink
	db *sql.DB
}

func (s *sqlSink) Open(ctx context.Context, req sdk.OpenRequest) error {
	var cfg struct {
		Path string `setting:"path"`
	}
	if err := req.Settings.Decode(&cfg); err != nil {
		return err
	}
	db, err := sql.Open("sqlite", cfg.Path)
	if err != nil {
		return fmt.Errorf("opening %s: %w", cfg.Path, err)
	}
	context.AfterFunc(req.Context(), func() { _ = db.Close() })
	s.db = db
	_, err = db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS records (op TEXT, key BLOB, payload BLOB);
		CREATE TABLE IF NOT EXISTS checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1), position BLOB NOT NULL)`)
	if err != nil {
		return fmt.Errorf("creating tables in %s: %w", cfg.Path, err)
	}
	return nil
}

func (s *sqlSink) Checkpoint(ctx context.Context) (record.Position, error) {
	var pos []byte
	err := s.db.QueryRowContext(ctx, `SELECT position FROM checkpoint WHERE id = 1`).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return pos, err
}

func (s *sqlSink) Write(ctx context.Context, b record.Batch) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	for _, r := range b.Records {
		if r.Op == record.OpHeartbeat {
			continue
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO records VALUES (?, ?, ?)`, r.Op.String(), r.Key, r.Payload); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO checkpoint VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET position = excluded.position`,
		[]byte(b.Position)); err != nil {
		return err
	}
	return tx.Commit()
}

func sqlPlugin() sdk.Plugin {
	return sdk.Plugin{
		Spec: sdk.Spec{Name: "sqlite", Version: "1", Summary: "writes to SQLite",
			Sink: &sdk.Stage{Summary: "one row per record", Capabilities: sdk.Capabilities{AtomicPosition: true},
				Settings: []sdk.Setting{{Name: "path", Type: sdk.TypeString, Required: true, Doc: "The database file."}}}},
		NewSink: func() sdk.Sink { return &sqlSink{} },
	}
}

// TestDatabaseSQLSink runs the sink suite against a sink holding a database/sql pool for its whole stage.
func TestDatabaseSQLSink(t *testing.T) {
	sdktest.Sink(t, sqlPlugin(), sdktest.SinkConfig{
		Settings: func(t *testing.T) map[string]any {
			return map[string]any{"path": filepath.Join(t.TempDir(), "out.db")}
		},
		Verify: func(t *testing.T, settings map[string]any, written []record.Record) {
			db, err := sql.Open("sqlite", settings["path"].(string))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			rows, err := db.Query(`SELECT op, key, payload FROM records ORDER BY rowid`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			i := 0
			for ; rows.Next(); i++ {
				var op string
				var key, payload []byte
				if err := rows.Scan(&op, &key, &payload); err != nil {
					t.Fatal(err)
				}
				if i >= len(written) {
					continue
				}
				if w := written[i]; op != w.Op.String() || !bytes.Equal(key, w.Key) || !bytes.Equal(payload, w.Payload) {
					t.Fatalf("row %d = %s %q %q, want %s %q %q", i, op, key, payload, w.Op, w.Key, w.Payload)
				}
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			if i != len(written) {
				t.Fatalf("the database holds %d records, want %d", i, len(written))
			}
		},
	})
}
