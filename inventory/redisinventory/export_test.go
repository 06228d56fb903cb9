package redisinventory

// SetHook sets the test hook a Durable's writers run inside their transaction after their
// Redis step.
func SetHook(d *Durable, f func(op, id string)) { d.hook = f }
