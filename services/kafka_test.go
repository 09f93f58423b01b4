package services

import "testing"

func TestKafkaStarts(t *testing.T) {
	k := StartKafka(t, KafkaOptions{SASL: true})
	if err := k.Restart(); err != nil {
		t.Fatal(err)
	}
}
