// Runs in <head>, before the first paint: sets data-theme on <html> from the
// stored setting, or from the system's preference, so that the page never
// flashes the wrong theme. main.js keeps it up to date afterwards.
(function () {
  let t = 'system';
  try {
    t = JSON.parse(localStorage.getItem('smolmq.settings.v1') || '{}').theme || 'system';
  } catch (e) { /* storage blocked or corrupt: follow the system */ }
  if (t !== 'light' && t !== 'dark') {
    t = window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
  }
  document.documentElement.dataset.theme = t;
})();
