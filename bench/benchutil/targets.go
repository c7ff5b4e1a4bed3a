package benchutil

// Met counts the targets that pass (a valid target that is met), and all
// targets.
func Met[T interface{ Pass() bool }](targets []T) (met, total int) {
	for _, t := range targets {
		if t.Pass() {
			met++
		}
	}
	return met, len(targets)
}
