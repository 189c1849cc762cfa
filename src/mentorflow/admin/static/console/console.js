// The console's only script of its own: the Content-Security-Policy allows no inline
// handlers, so a form that needs a confirmation carries it as data-confirm="…".
document.addEventListener("submit", function (event) {
  var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) {
    event.preventDefault();
  }
}, true);
