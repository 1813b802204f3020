// The experiment page's cancel button (templates/experiment.html): POST the API's cancel with a
// token typed on the page (the HttpOnly cookie only reads; a mutation always sends a Bearer token).
// Attached here, not inline: the pages' CSP allows no inline script.
async function cancelExperiment(id) {
  const token = document.getElementById('cancel-token').value || prompt('API token (snrlab token create)');
  if (!token) return;
  const r = await fetch('/api/v1/experiments/' + encodeURIComponent(id) + '/cancel',
                        {method: 'POST', headers: {'Authorization': 'Bearer ' + token}});
  const body = await r.json().catch(() => ({}));
  document.getElementById('cancel-msg').textContent = r.ok ? ('cancel requested: ' + body.status)
    : ('cancel failed: ' + ((body.error || {}).message || r.status));
  if (r.ok) setTimeout(() => location.reload(), 800);
}

const cancelButton = document.getElementById('cancel-experiment');
if (cancelButton) cancelButton.addEventListener('click', () => cancelExperiment(cancelButton.dataset.experimentId));
