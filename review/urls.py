app_name = "review"
urlpatterns = []

api_urlpatterns = []
