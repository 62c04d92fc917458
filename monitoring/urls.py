app_name = "monitoring"
urlpatterns = []

api_urlpatterns = []
