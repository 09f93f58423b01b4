module github.com/sluicehq/sluice/plugins/memory

go 1.26

require github.com/sluicehq/sluice/sdk v0.0.0

replace github.com/sluicehq/sluice/sdk => ../../sdk
