package kafka

import (
	"sync"
	"sync/atomic"
)

// queue runs jobs one at a time, in the order they were added, on a
// goroutine it starts when a job arrives and that ends when none is left.
// add never blocks, so a franz-go promise may call it. wait blocks until
// the goroutine has ended.
type queue struct {
	mu   sync.Mutex
	jobs []func()
	busy bool // a job runs or waits
	wg   sync.WaitGroup
	// idle mirrors !busy for addIfBusy's lock-free look on the hot path.
	idle atomic.Bool
}

// add queues job.
func (q *queue) add(job func()) {
	q.mu.Lock()
	q.addLocked(job)
	q.mu.Unlock()
}

// addIfBusy queues job and reports true if jobs run or wait; otherwise it
// does nothing and reports false. Checking and adding are one step, so a
// job is never added behind a goroutine that has just ended.
//
// A queue that is idle answers without taking the lock: a job added at the
// same moment by another goroutine may then run after the caller's work,
// as it would had it been added a moment later.
func (q *queue) addIfBusy(job func()) bool {
	if q.idle.Load() {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.busy {
		return false
	}
	q.addLocked(job)
	return true
}

func (q *queue) addLocked(job func()) {
	q.jobs = append(q.jobs, job)
	if !q.busy {
		q.busy = true
		q.idle.Store(false)
		q.wg.Add(1)
		go q.run()
	}
}

func (q *queue) run() {
	defer q.wg.Done()
	for {
		q.mu.Lock()
		if len(q.jobs) == 0 {
			q.busy = false
			q.idle.Store(true)
			q.jobs = nil // let a long backlog's array go
			q.mu.Unlock()
			return
		}
		job := q.jobs[0]
		q.jobs[0] = nil
		q.jobs = q.jobs[1:]
		q.mu.Unlock()
		job()
	}
}

// len returns the number of jobs that run or wait.
func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(q.jobs)
	if q.busy {
		n++ // the running job, or the goroutine about to end
	}
	return n
}

// wait blocks until no job runs or waits and the goroutine has ended.
func (q *queue) wait() { q.wg.Wait() }
