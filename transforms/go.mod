module github.com/sluicehq/sluice/transforms

go 1.26.0

require github.com/sluicehq/sluice/sdk v0.0.0

require github.com/expr-lang/expr v1.17.8

require go.mongodb.org/mongo-driver/v2 v2.8.2

require github.com/cockroachdb/apd/v3 v3.2.3

replace github.com/sluicehq/sluice/sdk => ../sdk
