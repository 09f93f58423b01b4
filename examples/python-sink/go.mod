module github.com/sluicehq/sluice/examples/python-sink

go 1.26.0
