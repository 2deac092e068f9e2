// Following faces from frame to frame, as the server's webcam does (emotion/tracking.py FaceTracker with
// keep_closed=0, then webapp/video.py smooth_live): greedy matching, nearest first, by distance from where each track
// was heading; each track's probabilities smoothed by an EMA. Same constants as the server.
export const MAX_SHIFT = 1.5, REACQUIRE_SHIFT = 0.75, MAX_UNSEEN_S = 1.0, VELOCITY_GAIN = 0.5, EMA = 0.4;

export class FaceTracker {
  constructor() {
    this.open = [];
    this.next = 1;
  }

  // time in seconds; boxes [x, y, w, h]; probs one array per box. Returns each face's track, in the order given.
  update(time, boxes, probs) {
    const pairs = [];
    this.open.forEach((track, j) => {
      const [cx, cy] = centreAt(track, time);
      const side = Math.max(1, Math.sqrt(track.box[2] * track.box[3]));
      const gate = track.missed ? REACQUIRE_SHIFT : MAX_SHIFT;
      boxes.forEach(([x, y, w, h], i) => {
        const d = Math.hypot(x + w / 2 - cx, y + h / 2 - cy) / side;
        if (d <= gate) pairs.push([d, i, j]);
      });
    });
    pairs.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2]);
    const assigned = new Map(), used = new Set();
    for (const [, i, j] of pairs) {
      if (!assigned.has(i) && !used.has(j)) {
        assigned.set(i, this.open[j]);
        used.add(j);
      }
    }
    boxes.forEach((box, i) => {
      let track = assigned.get(i);
      if (!track) {
        track = {id: this.next++, box, probs: probs[i].slice(), missed: 0, last: time, velocity: [0, 0]};
        this.open.push(track);
      } else {
        moved(track, box, time);
        track.probs = track.probs.map((p, k) => EMA * probs[i][k] + (1 - EMA) * p);
      }
      track.box = box;
      track.missed = 0;
      track.last = time;
      assigned.set(i, track);
    });
    for (const track of this.open) if (track.last !== time) track.missed += 1;
    this.open = this.open.filter((t) => time - t.last <= MAX_UNSEEN_S);
    return boxes.map((_, i) => assigned.get(i));
  }
}

function centreAt(track, time) {
  const [x, y, w, h] = track.box, dt = time - track.last;
  return [x + w / 2 + track.velocity[0] * dt, y + h / 2 + track.velocity[1] * dt];
}

function moved(track, box, time) {
  const dt = time - track.last;
  if (dt <= 0) return;
  const [x0, y0, w0, h0] = track.box, [x, y, w, h] = box;
  const vx = (x + w / 2 - x0 - w0 / 2) / dt, vy = (y + h / 2 - y0 - h0 / 2) / dt;
  track.velocity = [track.velocity[0] + VELOCITY_GAIN * (vx - track.velocity[0]),
                    track.velocity[1] + VELOCITY_GAIN * (vy - track.velocity[1])];
}
