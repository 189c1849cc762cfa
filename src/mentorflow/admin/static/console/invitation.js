// An invitation link carries its token after "#", which browsers never send to a server, so
// it sits in no access log: post it in the page's form instead, and drop it from the address.
(function () {
  var token = window.location.hash.slice(1);
  var form = document.getElementById("open-invitation");
  if (!token || !form) {
    return;
  }
  window.history.replaceState(null, "", window.location.pathname);
  form.elements.token.value = decodeURIComponent(token);
  form.submit();
})();
