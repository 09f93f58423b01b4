module github.com/sluicehq/sluice/services

go 1.26.0
