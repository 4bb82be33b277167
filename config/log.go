package config

// Log is [log].
type Log struct {
	Level  string `toml:"level"`
	Format string `toml:"format"`
}

// log checks [log].
func (c *checker) log(l *Log) {
	defStr(&l.Level, "info")
	switch l.Level {
	case "debug", "info", "warn", "error":
	default:
		c.fail("log.level", "must be \"debug\", \"info\", \"warn\" or \"error\"")
	}
	defStr(&l.Format, "json")
	switch l.Format {
	case "json", "text":
	default:
		c.fail("log.format", "must be \"json\" or \"text\"")
	}
}
