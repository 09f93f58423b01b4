package services

import "testing"

func TestMongoStarts(t *testing.T) {
	m := StartMongo(t)
	if m.URI == "" {
		t.Fatal("no URI")
	}
}
