// Command demo makes the changes in MongoDB that `make demo`'s MongoDB → Redis → Kafka run carries.
//
//	demo changes MONGO_URI N     insert N orders into shop.orders, update every third, delete every fifth
//
// Reading what arrives in Kafka is bin/kafka-tail's job (plugins/kafka/tools/kafka-tail).
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func main() {
	var err error
	switch {
	case len(os.Args) == 4 && os.Args[1] == "changes":
		err = changes(os.Args[2], atoi(os.Args[3]))
	default:
		fmt.Fprintln(os.Stderr, "usage: demo changes MONGO_URI N")
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		fmt.Fprintf(os.Stderr, "demo: %q is not a count\n", s)
		os.Exit(2)
	}
	return n
}

// changes inserts n orders, updates every third and deletes every fifth: n + n/3 + n/5 change events.
func changes(uri string, n int) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		return err
	}
	defer func() { _ = client.Disconnect(context.Background()) }()
	orders := client.Database("shop").Collection("orders")
	for i := range n {
		doc := bson.D{{Key: "_id", Value: i}, {Key: "customer", Value: fmt.Sprintf("c%d", i%7)},
			{Key: "total", Value: bson.NewDecimal128(0, uint64(i*1000+99))}, {Key: "placed", Value: time.Now()}}
		if _, err := orders.InsertOne(ctx, doc); err != nil {
			return err
		}
	}
	for i := 0; i < n; i += 3 {
		if _, err := orders.UpdateOne(ctx, bson.D{{Key: "_id", Value: i}}, bson.D{{Key: "$set", Value: bson.D{{Key: "status", Value: "paid"}}}}); err != nil {
			return err
		}
	}
	for i := 0; i < n; i += 5 {
		if _, err := orders.DeleteOne(ctx, bson.D{{Key: "_id", Value: i}}); err != nil {
			return err
		}
	}
	fmt.Printf("made %d changes in shop.orders: %d inserts, %d updates, %d deletes\n", n+(n+2)/3+(n+4)/5, n, (n+2)/3, (n+4)/5)
	return nil
}
